"""WSGI entry point of the reference order service:

    ORDER_SERVICE_ISSUER=http://127.0.0.1:8000 REDIS_URL=redis://127.0.0.1:6379/0 \
        granian --interface wsgi --port 8001 --working-dir examples/order_service wsgi:app
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import create_app

app = create_app()
