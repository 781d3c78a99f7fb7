"""The HTTP face: blueprints, request parsing, errors, access control, observability. No torch here."""
