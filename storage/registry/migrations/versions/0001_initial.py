"""initial registry schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 06:50:09.084257
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flow_run_id', sa.String(length=128), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('flow_run_id', name=op.f('uq_runs_flow_run_id'))
    )
    op.create_table('sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sources')),
    sa.UniqueConstraint('uri', name=op.f('uq_sources_uri'))
    )
    op.create_table('adapters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=True),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('repo', sa.String(length=512), nullable=False),
    sa.Column('revision', sa.String(length=256), nullable=True),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_hashes', sa.JSON(), nullable=False),
    sa.Column('peft_type', sa.String(length=64), nullable=True),
    sa.Column('base_model', sa.String(length=512), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('target_modules', sa.JSON(), nullable=True),
    sa.Column('parameter_count', sa.BigInteger(), nullable=True),
    sa.Column('bytes', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_adapters_source_id_sources')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapters')),
    sa.UniqueConstraint('uri', 'content_sha256', name=op.f('uq_adapters_uri_content_sha256'))
    )
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapters_base_model'), ['base_model'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapters_content_sha256'), ['content_sha256'], unique=False)

    op.create_table('artifacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('options_hash', sa.String(length=64), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('codec', sa.String(length=64), nullable=False),
    sa.Column('density', sa.Float(), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('sigma', sa.Float(), nullable=True),
    sa.Column('scale', sa.Float(), nullable=True),
    sa.Column('kept', sa.BigInteger(), nullable=True),
    sa.Column('bits_per_param', sa.Float(), nullable=True),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('bytes_source', sa.BigInteger(), nullable=True),
    sa.Column('ratio', sa.Float(), nullable=True),
    sa.Column('storage_uri', sa.String(length=2048), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('package_version', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], name=op.f('fk_artifacts_adapter_id_adapters')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts')),
    sa.UniqueConstraint('source_sha256', 'options_hash', name='uq_artifacts_idempotency')
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_artifacts_ratio'), ['ratio'], unique=False)
        batch_op.create_index(batch_op.f('ix_artifacts_sha256'), ['sha256'], unique=False)

    op.create_table('calibrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=256), nullable=False),
    sa.Column('metric', sa.String(length=128), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('chosen_density', sa.Float(), nullable=False),
    sa.Column('chosen_alpha', sa.Float(), nullable=False),
    sa.Column('chosen_score', sa.Float(), nullable=True),
    sa.Column('original_score', sa.Float(), nullable=True),
    sa.Column('runtime_s', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_calibrations_artifact_id_artifacts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calibrations'))
    )
    with op.batch_alter_table('calibrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calibrations_artifact_id'), ['artifact_id'], unique=False)

    op.create_table('publications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=2048), nullable=False),
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('remote_revision', sa.String(length=256), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_publications_artifact_id_artifacts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_publications')),
    sa.UniqueConstraint('artifact_id', 'destination', 'remote_revision',
                        name=op.f('uq_publications_artifact_id_destination_remote_revision'))
    )


def downgrade() -> None:
    op.drop_table('publications')
    with op.batch_alter_table('calibrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calibrations_artifact_id'))

    op.drop_table('calibrations')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_artifacts_sha256'))
        batch_op.drop_index(batch_op.f('ix_artifacts_ratio'))

    op.drop_table('artifacts')
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapters_content_sha256'))
        batch_op.drop_index(batch_op.f('ix_adapters_base_model'))

    op.drop_table('adapters')
    op.drop_table('sources')
    op.drop_table('runs')
