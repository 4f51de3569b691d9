"""Path converters that bound a path parameter's length and characters: a long or odd one is a 404
before any view or lookup runs."""


class BoundedConverter:
    """A path parameter of the characters and length ``regex`` allows, passed to the view as it is."""

    regex: str

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class SkuConverter(BoundedConverter):
    """A sku in a path: what stock creation accepts (at most 64 characters); anything else is a 404."""

    regex = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
