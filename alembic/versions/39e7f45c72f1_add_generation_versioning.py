"""add_generation_versioning_and_project_active_tracking

The application's migration (its README: shared/seed/000_2cd8079c8d4465bd.txt): eight columns
on ``generations``, two on ``projects``, the foreign key ``fk_projects_active_generation``
(ON DELETE SET NULL) and the five data steps — versions, storage paths, latest version, active
generation, ``is_active`` flags. Four deliberate corrections to the seed, each on purpose:

1. ``version`` ends NOT NULL **with server default 1**. The seed's table promises the default,
   but its code only made the column NOT NULL, so an old writer that does not know the column
   would fail on insert. The column is added nullable, filled, then tightened.
2. ``total_size_bytes`` is BIGINT: INTEGER overflows at 2 GiB, and generated projects with
   assets pass that.
3. A plain (non-unique) index on ``(project_id, version)``: the seed says "indexed where
   needed". It must not be unique: the application's generate/iterate endpoints insert rows
   without a version (the default, 1), so a unique index refuses every new generation of an
   existing project. Duplicates are repaired by ``storage-migrate resync`` instead.
4. Version order breaks ties on ``created_at`` by ``id``, so two generations created in the same
   instant get the same numbers on every run and on every database. The active generation is
   the completed one with the highest version, which agrees with that order.

Every data step is one set-based UPDATE that PostgreSQL and SQLite (3.33+: UPDATE … FROM and
window functions) both run, and none reads from the database in Python, so
``alembic upgrade e011ab9dd223:39e7f45c72f1 --sql`` prints SQL that runs as it is.

Revision ID: 39e7f45c72f1
Revises: e011ab9dd223
Create Date: 2025-10-14 00:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "39e7f45c72f1"
down_revision = "e011ab9dd223"
branch_labels = None
depends_on = None

FK_ACTIVE_GENERATION = "fk_projects_active_generation"
VERSION_INDEX = "ix_generations_project_id_version"

ASSIGN_VERSIONS = """
UPDATE generations SET version = numbered.row_number
FROM (
    SELECT id, ROW_NUMBER() OVER (PARTITION BY project_id ORDER BY created_at, id) AS row_number
    FROM generations
) AS numbered
WHERE numbered.id = generations.id
"""

POPULATE_STORAGE_PATHS = "UPDATE generations SET storage_path = './storage/projects/' || id"

TRACK_LATEST_VERSION = """
UPDATE projects SET latest_version = COALESCE(
    (SELECT MAX(g.version) FROM generations g WHERE g.project_id = projects.id), 0)
"""

ASSIGN_ACTIVE_GENERATION = """
UPDATE projects SET active_generation_id = (
    SELECT g.id FROM generations g
    WHERE g.project_id = projects.id AND g.status = 'completed'
    ORDER BY g.version DESC
    LIMIT 1
)
"""

SYNC_ACTIVE_FLAGS = """
UPDATE generations SET is_active = TRUE
WHERE id IN (SELECT active_generation_id FROM projects WHERE active_generation_id IS NOT NULL)
"""


def upgrade() -> None:
    with op.batch_alter_table("generations") as generations:
        generations.add_column(sa.Column("version", sa.Integer(), nullable=True))
        generations.add_column(sa.Column("version_name", sa.String(50), nullable=True))
        generations.add_column(
            sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        generations.add_column(sa.Column("storage_path", sa.String(500), nullable=True))
        generations.add_column(
            sa.Column("file_count", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        generations.add_column(sa.Column("total_size_bytes", sa.BigInteger(), nullable=True))
        generations.add_column(sa.Column("diff_from_previous", sa.Text(), nullable=True))
        generations.add_column(sa.Column("changes_summary", sa.JSON(), nullable=True))

    with op.batch_alter_table("projects") as projects:
        projects.add_column(sa.Column("active_generation_id", sa.String(36), nullable=True))
        projects.add_column(
            sa.Column("latest_version", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        projects.create_foreign_key(
            FK_ACTIVE_GENERATION, "generations", ["active_generation_id"], ["id"], ondelete="SET NULL"
        )

    op.execute(ASSIGN_VERSIONS)
    op.execute(POPULATE_STORAGE_PATHS)
    op.execute(TRACK_LATEST_VERSION)
    op.execute(ASSIGN_ACTIVE_GENERATION)
    op.execute(SYNC_ACTIVE_FLAGS)

    with op.batch_alter_table("generations") as generations:
        generations.alter_column(
            "version", existing_type=sa.Integer(), nullable=False, server_default=sa.text("1")
        )
    op.create_index(VERSION_INDEX, "generations", ["project_id", "version"], unique=False)


def downgrade() -> None:
    op.drop_index(VERSION_INDEX, table_name="generations")
    with op.batch_alter_table("projects") as projects:
        projects.drop_constraint(FK_ACTIVE_GENERATION, type_="foreignkey")
        projects.drop_column("latest_version")
        projects.drop_column("active_generation_id")
    with op.batch_alter_table("generations") as generations:
        for column in (
            "changes_summary",
            "diff_from_previous",
            "total_size_bytes",
            "file_count",
            "storage_path",
            "is_active",
            "version_name",
            "version",
        ):
            generations.drop_column(column)
