pytest_plugins = ["choreo.testing"]
