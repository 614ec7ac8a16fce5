"""base schema: the service's tables as they were before generation versioning

The minimal ``users`` and ``organizations`` tables the foreign keys need, ``projects``
(12 columns) and ``generations`` (19 columns), exactly as the application had them.

Revision ID: e011ab9dd223
Revises:
Create Date: 2025-10-01 00:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "e011ab9dd223"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(36), primary_key=True),
        *_timestamps(),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("organization_id", sa.String(36), sa.ForeignKey("organizations.id"), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("domain", sa.String(50)),
        sa.Column("tech_stack", sa.String(50), nullable=False),
        sa.Column("constraints", sa.JSON()),
        sa.Column("status", sa.String(20), nullable=False, server_default="draft"),
        sa.Column("is_public", sa.Boolean(), nullable=False, server_default=sa.false()),
        # The application's other columns of that time, so its ORM can load a demo database.
        sa.Column("github_repo_url", sa.String(500)),
        sa.Column("github_repo_name", sa.String(255)),
        sa.Column("settings", sa.JSON()),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.String(36), primary_key=True),
        *_timestamps(),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("context", sa.JSON()),
        sa.Column("extracted_schema", sa.JSON()),
        sa.Column("output_files", sa.JSON()),
        sa.Column("review_feedback", sa.JSON()),
        sa.Column("documentation", sa.JSON()),
        sa.Column("quality_score", sa.Float()),
        sa.Column("status", sa.String(20), nullable=False, server_default="processing"),
        sa.Column("error_message", sa.Text()),
        sa.Column("schema_extraction_time", sa.Float()),
        sa.Column("code_generation_time", sa.Float()),
        sa.Column("review_time", sa.Float()),
        sa.Column("docs_generation_time", sa.Float()),
        sa.Column("total_time", sa.Float()),
        sa.Column("is_iteration", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("parent_generation_id", sa.String(36), sa.ForeignKey("generations.id"), nullable=True),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(36), primary_key=True),
        *_timestamps(),
        sa.Column("generation_id", sa.String(36), sa.ForeignKey("generations.id"), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("storage_url", sa.String(500), nullable=False),
        sa.Column("file_size", sa.Integer()),
        sa.Column("file_metadata", sa.JSON()),
    )
    op.create_index("ix_generations_project_id", "generations", ["project_id"])
    op.create_index("ix_projects_user_id", "projects", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_projects_user_id", table_name="projects")
    op.drop_index("ix_generations_project_id", table_name="generations")
    op.drop_table("artifacts")
    op.drop_table("generations")
    op.drop_table("projects")
    op.drop_table("organizations")
    op.drop_table("users")
