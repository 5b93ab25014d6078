"""Entry point of the Functions host (Python v2 model): one blueprint per `*_fn` package."""

import logging

import azure.functions as func

from delivery_fn import bp as delivery_bp
from detect_fn import bp as detect_bp
from enrich_fn import bp as enrich_bp
from inventory_fn import bp as inventory_bp
from normalize_fn import bp as normalize_bp

# The worker forwards every level its loggers pass; azure-core logs each storage request's URL and headers at
# INFO (HttpLoggingPolicy): formatting and shipping them costs CPU on every state write and fills Application
# Insights. host.json's levels filter them only after that work is done.
logging.getLogger("azure").setLevel(logging.WARNING)

app = func.FunctionApp()
app.register_functions(normalize_bp)
app.register_functions(enrich_bp)
app.register_functions(detect_bp)
app.register_functions(inventory_bp)
app.register_functions(delivery_bp)
