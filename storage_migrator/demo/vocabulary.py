"""Word lists the renderers and the editor draw from: entities, identifiers, verbs, packages,
and the latin-1 and unicode words the odd text files carry."""
from __future__ import annotations

import random

ENTITIES = [
    "user", "order", "product", "invoice", "customer", "payment", "shipment", "category", "review",
    "cart", "coupon", "address", "warehouse", "supplier", "employee", "department", "ticket",
    "comment", "tag", "subscription", "plan", "report", "notification", "message", "attachment",
    "appointment", "patient", "doctor", "course", "lesson", "student", "enrollment", "vehicle",
    "route", "driver", "booking", "room", "event", "venue", "refund",
]
WORDS = ("cache", "token", "retry", "status", "limit", "audit", "owner", "price", "batch", "region",
         "quota", "email", "session", "timeout", "filter", "index", "export", "webhook")
VERBS = ("validate", "cache", "log", "paginate", "normalize", "index", "retry", "sanitize", "document")
PACKAGES = ("fastapi", "uvicorn", "sqlalchemy", "pydantic", "alembic", "httpx", "python-jose",
            "passlib", "pytest", "psycopg", "redis", "celery", "structlog")
LATIN1_WORDS = ("café", "naïve", "façade", "señor", "Ærøskøbing", "crème brûlée", "déjà vu", "Zürich",
                "jalapeño", "garçon")
UNICODE_WORDS = ("→ ✓", "日本語", "Überblick", "Δ delta", "naïve ☕", "emoji 🚀")


def phrase(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)} the {rng.choice(WORDS)} {rng.choice(WORDS)}"
