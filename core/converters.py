"""Path converters that bound a path parameter's length and characters: a long or odd one is a 404
before any view or lookup runs."""


class SkuConverter:
    """A sku in a path: what stock creation accepts (at most 64 characters); anything else is a 404."""

    regex = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class KeyConverter(SkuConverter):
    """An opaque key in a path, such as a correlation id: one path segment of at most 128 characters."""

    regex = "[^/]{1,128}"
