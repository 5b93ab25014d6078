"""Entry point of the Functions host (Python v2 model): one blueprint per `*_fn` package."""

import azure.functions as func

from delivery_fn import bp as delivery_bp
from detect_fn import bp as detect_bp
from enrich_fn import bp as enrich_bp
from inventory_fn import bp as inventory_bp
from normalize_fn import bp as normalize_bp

app = func.FunctionApp()
app.register_functions(normalize_bp)
app.register_functions(enrich_bp)
app.register_functions(detect_bp)
app.register_functions(inventory_bp)
app.register_functions(delivery_bp)
