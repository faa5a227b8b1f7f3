"""Built-in plugins of ovquant. Each module here registers through the same hooks a third party uses."""
