"""The service's FastAPI application."""
