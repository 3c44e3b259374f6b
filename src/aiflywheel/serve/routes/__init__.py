"""The API's routes: classify and feedback, features and promotion, health and metrics."""
