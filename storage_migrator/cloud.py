"""The application's cloud copies, for the report only: the tool never calls the cloud.

A generation the tool renumbers keeps its Supabase object (``{project_id}/generations/
v{version}__{generation_id}.tar.gz`` in ``SUPABASE_BUCKET``) under the old number, so the report
lists old key → new key for an operator to rename. Read from the application's own environment
variables, with its spelling (``USE_CLOUD_STORAGE``); its service key is never read."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

USE_CLOUD_STORAGE_VARIABLE = "USE_CLOUD_STORAGE"
BUCKET_VARIABLE = "SUPABASE_BUCKET"
DEFAULT_BUCKET = "codebegen-projects"         # the application's default
TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})   # pydantic's, compared in lower case


def object_key(project_id: str, version: int, generation_id: str) -> str:
    """The object a generation's cloud copy is stored under, as the application names it."""
    return f"{project_id}/generations/v{version}__{generation_id}.tar.gz"


@dataclass(frozen=True)
class CloudStorage:
    """The application's cloud storage, as its configuration turns it on."""

    bucket: str

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> CloudStorage | None:
        """None unless ``USE_CLOUD_STORAGE`` is true; the bucket is ``SUPABASE_BUCKET`` or the default."""
        if environment.get(USE_CLOUD_STORAGE_VARIABLE, "").strip().lower() not in TRUE_WORDS:
            return None
        return cls(environment.get(BUCKET_VARIABLE, "").strip() or DEFAULT_BUCKET)
