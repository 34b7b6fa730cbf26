"""Settings, logging and middleware shared by the whole application."""
