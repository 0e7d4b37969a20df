"""This host as a whole: readiness (``host check``) and repairs of leftovers (``host repair``)."""
