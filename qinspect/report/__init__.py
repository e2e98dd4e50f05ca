"""Layer and model reports: HTML, JSON, CSV and PNG."""
