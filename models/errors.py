"""What a predictor raises for a well-formed request it cannot answer, by kind, so that serving
answers each with its own status instead of reading messages. Mixins: each family's own error
classes keep their base (ValueError, KeyError) and add the kind."""

from __future__ import annotations


class UnknownName(Exception):
    """The request names something the served version does not know: a site that is not among the
    city's candidates, a category the catalogue does not have. Serving answers 404."""


class BeyondVersion(Exception):
    """Well-formed and valid by the API's schema, but beyond what the served version can answer:
    days past its forecast horizon, constraints no set of the city's candidate sites meets.
    Serving answers 409; the message says what the version can do."""
