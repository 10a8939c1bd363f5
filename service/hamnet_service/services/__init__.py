"""Use cases of the gateway, one function each; routes only translate HTTP to these calls."""
