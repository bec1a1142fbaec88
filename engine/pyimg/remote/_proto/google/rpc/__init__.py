"""Generated from the REAPI protos by tools/gen_reapi_protos.py: do not edit."""
