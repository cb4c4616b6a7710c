"""The web component: the Starlette application and its routes."""
