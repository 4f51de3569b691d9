"""Bounds every app's integers share, so each fits its column on SQLite and PostgreSQL alike."""

# A quantity (an order line's, a restock's, the stock on hand) is at most a billion: it fits
# PostgreSQL's 32-bit integer column with room for one more addition, and an order of
# MAX_LINES such lines still sums within 64 bits.
MAX_QUANTITY = 1_000_000_000
