"""registry tables

Revision ID: reg0001
Revises: 
Create Date: 2026-11-28 00:21:11.586359
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ('registry',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('registry_central_services',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('jwks', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_registry_central_services'))
    )
    op.create_table('registry_federation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance', sa.String(length=255), nullable=False),
    sa.Column('globalconf_validity', sa.Integer(), nullable=False),
    sa.Column('globalconf_refresh', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_registry_federation_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_federation'))
    )
    op.create_table('registry_global_groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_global_groups')),
    sa.UniqueConstraint('code', name=op.f('uq_registry_global_groups_code'))
    )
    op.create_table('registry_globalconf',
    sa.Column('serial', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('signed', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('serial', name=op.f('pk_registry_globalconf'))
    )
    op.create_table('registry_members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_class', sa.String(length=255), nullable=False),
    sa.Column('member_code', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_registry_members_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_members')),
    sa.UniqueConstraint('member_class', 'member_code', name=op.f('uq_registry_members_member_class_member_code'))
    )
    op.create_table('registry_operator_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_operator_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_registry_operator_tokens_name')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_registry_operator_tokens_token_sha256'))
    )
    op.create_table('registry_purposes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('description', sa.String(length=2000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_purposes')),
    sa.UniqueConstraint('code', name=op.f('uq_registry_purposes_code'))
    )
    op.create_table('registry_gateways',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.Column('address', sa.String(length=2048), nullable=False),
    sa.Column('tls_certificate', sa.Text(), nullable=False),
    sa.Column('tls_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_registry_gateways_status')),
    sa.ForeignKeyConstraint(['member_id'], ['registry_members.id'], name=op.f('fk_registry_gateways_member_id_registry_members'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_gateways')),
    sa.UniqueConstraint('member_id', 'code', name=op.f('uq_registry_gateways_member_id_code'))
    )
    op.create_table('registry_member_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('jwk', sa.Text(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['registry_members.id'], name=op.f('fk_registry_member_keys_member_id_registry_members'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_member_keys')),
    sa.UniqueConstraint('kid', name=op.f('uq_registry_member_keys_kid'))
    )
    op.create_table('registry_subsystems',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_registry_subsystems_status')),
    sa.ForeignKeyConstraint(['member_id'], ['registry_members.id'], name=op.f('fk_registry_subsystems_member_id_registry_members'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_subsystems')),
    sa.UniqueConstraint('member_id', 'code', name=op.f('uq_registry_subsystems_member_id_code'))
    )
    op.create_table('registry_gateway_clients',
    sa.Column('gateway_id', sa.Integer(), nullable=False),
    sa.Column('subsystem_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['gateway_id'], ['registry_gateways.id'], name=op.f('fk_registry_gateway_clients_gateway_id_registry_gateways'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subsystem_id'], ['registry_subsystems.id'], name=op.f('fk_registry_gateway_clients_subsystem_id_registry_subsystems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('gateway_id', 'subsystem_id', name=op.f('pk_registry_gateway_clients'))
    )
    op.create_table('registry_global_group_members',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('subsystem_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['registry_global_groups.id'], name=op.f('fk_registry_global_group_members_group_id_registry_global_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subsystem_id'], ['registry_subsystems.id'], name=op.f('fk_registry_global_group_members_subsystem_id_registry_subsystems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'subsystem_id', name=op.f('pk_registry_global_group_members'))
    )
    op.create_table('registry_local_groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['registry_subsystems.id'], name=op.f('fk_registry_local_groups_owner_id_registry_subsystems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_local_groups')),
    sa.UniqueConstraint('owner_id', 'code', name=op.f('uq_registry_local_groups_owner_id_code'))
    )
    op.create_table('registry_services',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subsystem_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(length=255), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('description', sa.String(length=2000), nullable=False),
    sa.Column('request_schema_subject', sa.String(length=255), nullable=True),
    sa.Column('request_schema_version', sa.Integer(), nullable=True),
    sa.Column('response_schema_subject', sa.String(length=255), nullable=True),
    sa.Column('response_schema_version', sa.Integer(), nullable=True),
    sa.Column('requires_consent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_registry_services_status')),
    sa.ForeignKeyConstraint(['subsystem_id'], ['registry_subsystems.id'], name=op.f('fk_registry_services_subsystem_id_registry_subsystems'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_services')),
    sa.UniqueConstraint('subsystem_id', 'code', 'version', name=op.f('uq_registry_services_subsystem_id_code_version'))
    )
    op.create_table('registry_access_rights',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('path', sa.String(length=2048), nullable=False),
    sa.Column('subsystem_id', sa.Integer(), nullable=True),
    sa.Column('global_group_id', sa.Integer(), nullable=True),
    sa.Column('local_group_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(CASE WHEN subsystem_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN global_group_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN local_group_id IS NULL THEN 0 ELSE 1 END) = 1', name=op.f('ck_registry_access_rights_one_grantee')),
    sa.ForeignKeyConstraint(['global_group_id'], ['registry_global_groups.id'], name=op.f('fk_registry_access_rights_global_group_id_registry_global_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['local_group_id'], ['registry_local_groups.id'], name=op.f('fk_registry_access_rights_local_group_id_registry_local_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['service_id'], ['registry_services.id'], name=op.f('fk_registry_access_rights_service_id_registry_services'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subsystem_id'], ['registry_subsystems.id'], name=op.f('fk_registry_access_rights_subsystem_id_registry_subsystems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_access_rights'))
    )
    op.create_table('registry_local_group_members',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('subsystem_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['registry_local_groups.id'], name=op.f('fk_registry_local_group_members_group_id_registry_local_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subsystem_id'], ['registry_subsystems.id'], name=op.f('fk_registry_local_group_members_subsystem_id_registry_subsystems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'subsystem_id', name=op.f('pk_registry_local_group_members'))
    )
    op.create_table('registry_service_purposes',
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('purpose_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['purpose_id'], ['registry_purposes.id'], name=op.f('fk_registry_service_purposes_purpose_id_registry_purposes'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['service_id'], ['registry_services.id'], name=op.f('fk_registry_service_purposes_service_id_registry_services'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('service_id', 'purpose_id', name=op.f('pk_registry_service_purposes'))
    )



def downgrade() -> None:

    op.drop_table('registry_service_purposes')
    op.drop_table('registry_local_group_members')
    op.drop_table('registry_access_rights')
    op.drop_table('registry_services')
    op.drop_table('registry_local_groups')
    op.drop_table('registry_global_group_members')
    op.drop_table('registry_gateway_clients')
    op.drop_table('registry_subsystems')
    op.drop_table('registry_member_keys')
    op.drop_table('registry_gateways')
    op.drop_table('registry_purposes')
    op.drop_table('registry_operator_tokens')
    op.drop_table('registry_members')
    op.drop_table('registry_globalconf')
    op.drop_table('registry_global_groups')
    op.drop_table('registry_federation')
    op.drop_table('registry_central_services')

