"""The canonical citizen records: valid schemas, examples that validate, registered by
`shahrah registry init`, and the schema references services may make."""

from __future__ import annotations

import pytest

import schemas
from core.db import Sessions, transaction
from core.errors import NotFoundError
from registry import service as ops
from registry.globalconf import SchemaRef
from registry.payloads import ServiceCreate, ServiceUpdate
from registry.schemareg import service
from registry.schemareg.documents import DRAFT202012, Bundle, check_schema, draft_of
from registry.schemareg.records import register_records
from registry.schemareg.validation import compile_bundle, reference_validator
from tests.registry.federation import CIVIL, PERSON

RECORDS = [r for r in schemas.records() if r.subject != schemas.COMMON]
COMMON = next(r for r in schemas.records() if r.subject == schemas.COMMON).schema


def bundle(record: schemas.Record) -> Bundle:
    return Bundle(record.schema, draft_of(record.schema), {schemas.COMMON_REFERENCE: COMMON})


def test_the_seven_records_are_shipped() -> None:
    assert [r.subject for r in RECORDS] == [
        "pk.citizen-complaint",
        "pk.lmc.property-tax-assessment",
        "pk.nadra.birth-registration",
        "pk.nadra.person",
        "pk.plra.land-parcel",
        "pk.punjab.domicile-certificate",
        "pk.punjab.vehicle-registration",
    ]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.subject)
def test_every_example_validates_and_the_schema_is_sound(record: schemas.Record) -> None:
    assert record.schema["$schema"] == DRAFT202012
    assert record.schema.get("additionalProperties") is False  # closed: evolvable under BACKWARD
    check_schema(bundle(record))
    compiled = compile_bundle(1, bundle(record))
    reference = reference_validator(bundle(record))
    assert record.schema["examples"]
    for instance in record.schema["examples"]:
        compiled.validate(instance)
        reference.validate(instance)
        if "cnic" in instance:
            broken = {**instance, "cnic": "3520212345671"}  # CNIC without its dashes
            assert not compiled.validator.is_valid(broken)


async def test_init_registers_records_and_services_name_only_registered_schemas(
    seeded: Sessions,
) -> None:
    async with transaction(seeded) as s:
        done = await register_records(s)
    assert done[schemas.COMMON].version == 1
    async with transaction(seeded, write=False) as s:
        person = await service.get_version(s, "pk.nadra.person", 1)
    assert [r.model_dump() for r in person.references] == [
        {"name": "pk.common.json", "subject": "pk.common", "version": 1}
    ]
    with pytest.raises(
        NotFoundError, match=r"response_schema pk\.nadra\.person:2 is not registered"
    ):
        async with transaction(seeded) as s:
            await ops.update_service(
                s,
                PERSON,
                ServiceUpdate(response_schema=SchemaRef(subject="pk.nadra.person", version=2)),
            )
    with pytest.raises(NotFoundError, match=r"request_schema pk\.nobody:1"):
        async with transaction(seeded) as s:
            await ops.add_service(
                s,
                ServiceCreate(
                    id=CIVIL.service("birth", "v1"),
                    title="Birth",
                    request_schema=SchemaRef(subject="pk.nobody", version=1),
                ),
            )
    async with transaction(seeded) as s:
        info = await ops.update_service(
            s,
            PERSON,
            ServiceUpdate(response_schema=SchemaRef(subject="pk.nadra.person", version=1)),
        )
    assert info.response_schema == SchemaRef(subject="pk.nadra.person", version=1)
