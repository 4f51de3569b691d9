"""Schemathesis holds the live API to its OpenAPI schema: every operation, as staff and as a customer, with
generated valid and invalid input, then chains of calls along the schema's links. No answer may be a
server error, and every answer must be one the schema documents: its status, content type, headers and
body. Consumers do not run behind the live server, so what a test writes is never projected: reads of it
answer the documented 404, while the seed's stock and order are in the views."""

from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import REPORTS
from tests.openapi.live_api import ANONYMOUS, ROLES, Target, openapi_document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# They bound the run to well under a minute per database on two cores: generated cases per operation and
# role (on top of the schema's examples and schemathesis's boundary values), and chains of calls per role,
# each a few calls long.
MAX_EXAMPLES = 50
CHAINS = 40
STEPS_PER_CHAIN = 8

SETTINGS = hypothesis.settings(
    deadline=None,  # the live server shares two cores with everything else
    database=None,  # a stored failing example would not replay: the server's data differs from run to run
    # Function-scoped fixtures (the seeded live server) and slow calls are what this test is made of.
    suppress_health_check=list(hypothesis.HealthCheck),
)

schema = schemathesis.openapi.from_dict(openapi_document())

# Calls per (role, operation) and per (role, status), for the report at the end of the run.
calls: Counter[tuple[str, str]] = Counter()
statuses: Counter[tuple[str, int]] = Counter()


def _count(target: Target, label: str, response: schemathesis.Response) -> None:
    calls[(target.role, label)] += 1
    statuses[(target.role, response.status_code)] += 1


@schema.parametrize()
@hypothesis.settings(SETTINGS, max_examples=MAX_EXAMPLES)
def test_every_operation_answers_as_its_schema_says(case: schemathesis.Case, target: Target) -> None:
    response = case.call(base_url=target.base_url, headers=target.headers)
    _count(target, case.operation.label, response)
    case.validate_response(response, checks=CHECKS, headers=target.headers)


@pytest.mark.parametrize("role", ROLES)  # a chain needs something to follow: no anonymous caller
def test_chains_of_calls_along_the_links_answer_as_the_schema_says(target: Target) -> None:
    # Alice's name, for staff, who act for a customer by naming them.
    acting_for = {"customer_id": "alice"} if target.role == "staff" else {}
    skus = [item.sku for item in target.seed.items]

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        """Schemathesis's chains start from operations it can call with random data. An order needs a sku
        that exists and, for staff, a customer: these two roots give the chains a real order to follow."""

        entry = Bundle("entry")  # each result goes on to the bundle of its operation and status

        @initialize(target=entry, sku=st.sampled_from(skus), quantity=st.integers(1, 3))
        def place_an_order(self, sku: str, quantity: int) -> StepOutput:
            body = {**acting_for, "lines": [{"sku": sku, "quantity": quantity}]}
            return self.root(schema["/api/orders/"]["POST"].Case(body=body))

        @initialize(target=entry)
        def list_alices_orders(self) -> StepOutput:
            return self.root(schema["/api/orders/"]["GET"].Case(query=acting_for))

        def root(self, case: schemathesis.Case) -> StepOutput:
            self.recorder.record_case(case=case)
            return self.step(StepInput.initial(case))

        # Each chain starts from the seed: a chain that replays the same calls gets the same answers, as
        # Hypothesis requires, and does not find the stock or the order an earlier chain changed.
        def teardown(self) -> None:
            super().teardown()
            target.seed.restore()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": target.base_url, "headers": target.headers}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            _count(target, case.operation.label, response)
            calls[(target.role, "in chains")] += 1

        def validate_response(self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs, recorder=self.recorder)

    Workflow.run(settings=hypothesis.settings(SETTINGS, max_examples=CHAINS, stateful_step_count=STEPS_PER_CHAIN))


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    operations = {label for _role, label in calls if label != "in chains"}
    if not operations:
        return
    REPORTS.append(f"schemathesis: {len(operations)} operations")
    for role in (*ROLES, ANONYMOUS):
        total = sum(n for (who, label), n in calls.items() if who == role and label != "in chains")
        by_status = ", ".join(f"{code}: {n}" for (who, code), n in sorted(statuses.items()) if who == role)
        REPORTS.append(f"  as {role}: {total} calls, {calls[(role, 'in chains')]} of them in chains; {by_status}")
