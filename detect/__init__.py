"""Pipeline glue: data layer, the `python -m detect.run` entry point, ensemble and outputs."""
