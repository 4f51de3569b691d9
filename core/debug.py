"""What Django's error pages and error e-mails may show."""

import re

from django.views.debug import SafeExceptionReporterFilter


class SecretsFilter(SafeExceptionReporterFilter):
    """Django's filter, also masking the backing services' URLs: they carry their passwords, and under
    ``runserver`` the process environment is part of every request's META."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|REDIS_URL|MONGODB_URI|DATABASE_URL|CACHE_URL",
        flags=re.IGNORECASE,
    )
