"""The API's typed answers (pydantic models) and the tables the OpenAPI document is built from."""
