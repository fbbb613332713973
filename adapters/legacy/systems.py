"""The demo's legacy systems, built from synthetic citizens.

- **NADRA's civil registry**: a SQL database in a legacy layout
  (``CITIZEN_MASTER``: upper-case columns, CNIC without dashes, dates as text
  in two formats, district codes, some house numbers in Urdu digits).
- **Punjab land records**: parcels served over SOAP by
  :mod:`adapters.legacy.land_records` from ``land-records.json``.
- **Lahore property tax**: a mainframe extract, fixed-width EBCDIC (cp037)
  with packed and zoned decimals and a trailer record, dropped in
  ``property-tax/``.
- **Union council birth registrations**: CSV sheets (UTF-8 with a BOM, as
  spreadsheet programs write them; dates partly in Urdu digits) dropped in
  ``births/``.

Each system's adapter configuration is in ``adapters/legacy/configs/``; the
fixed-width layout and CSV columns are read from those files, so writer and
reader cannot disagree.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.config import load_config
from adapters.drops import FilesService
from adapters.legacy.synthetic import DISTRICTS, Person, make_people
from adapters.records import FixedWidthFormat
from core.files import write_atomic

__all__ = [
    "CONFIGS",
    "LegacyDemo",
    "build",
    "citizen_table",
    "config_path",
    "create_nadra_database",
    "property_tax_layout",
]

CONFIGS = Path(__file__).parent / "configs"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_URDU_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_MAUZAS = (
    "Kot Lakhpat",
    "Ichhra",
    "Mozang",
    "Baghbanpura",
    "Shahdara",
    "Kahna Nau",
    "Niaz Baig",
    "Bhasin",
    "Jallo",
    "Daroghawala",
)
_TOWNS = (
    ("GLB", "Gulberg"),
    ("MDT", "Model Town"),
    ("SMN", "Samanabad"),
    ("JHR", "Johar Town"),
    ("IQB", "Iqbal Town"),
    ("SHL", "Shalimar"),
    ("WGH", "Wahga"),
    ("RVI", "Ravi"),
)
_MUTATIONS = ("BAI", "WIRASAT", "HIBA", "REHAN")  # sale, inheritance, gift, mortgage
_PLACES = ("Hospital", "Hospital", "Home", "Other")  # as the sheets write it
_COUNCILS = {45: "Shadman", 112: "Samanabad"}


def config_path(name: str) -> Path:
    """One of the packaged adapter configurations: nadra, plra, lmc or births."""
    return CONFIGS / f"{name}.yaml"


def citizen_table(metadata: sa.MetaData) -> sa.Table:
    """NADRA's legacy table. Names are left unquoted, so each database folds them its own way
    (PostgreSQL to lower case), as a real legacy schema created by hand would be."""

    def col(name: str, type_: sa.types.TypeEngine[Any], **kw: Any) -> sa.Column[Any]:
        return sa.Column(name, type_, quote=False, **kw)

    return sa.Table(
        "CITIZEN_MASTER",
        metadata,
        col("CNIC_NO", sa.CHAR(13), primary_key=True),
        col("FIRST_NM", sa.String(40), nullable=False),
        col("LAST_NM", sa.String(40), nullable=False),
        col("NAME_URDU", sa.String(120)),
        col("FH_FLAG", sa.CHAR(1), nullable=False),
        col("FH_NAME", sa.String(80), nullable=False),
        col("FH_NAME_URDU", sa.String(120)),
        col("GENDER_CD", sa.CHAR(1), nullable=False),
        col("DOB_TXT", sa.String(11), nullable=False),
        col("ADDR_LINE", sa.String(120)),
        col("UC_CD", sa.String(10)),
        col("UC_NM", sa.String(40)),
        col("TEHSIL_NM", sa.String(40)),
        col("DISTRICT_CD", sa.CHAR(3), nullable=False),
        col("PROVINCE_CD", sa.CHAR(2), nullable=False),
        col("REC_STATUS", sa.CHAR(1), nullable=False),
        quote=False,
    )


def _legacy_date(person: Person, rng: random.Random) -> str:
    # Records migrated from the old system keep Oracle's DD-MON-YY.
    b = person.born
    if rng.random() < 0.25:
        return f"{b.day:02d}-{_MONTHS[b.month - 1]}-{b.year % 100:02d}"
    return f"{b.day:02d}/{b.month:02d}/{b.year}"


def create_nadra_database(url: str, people: list[Person], seed: int = 2026) -> None:
    """Create ``CITIZEN_MASTER`` at ``url`` (any SQLAlchemy URL) and fill it with ``people``."""
    rng = random.Random(seed)
    metadata = sa.MetaData()
    table = citizen_table(metadata)
    engine = sa.create_engine(_driver(url))
    try:
        with engine.begin() as conn:
            # Unquoted, so each database folds the name as it created it.
            conn.execute(sa.text("DROP TABLE IF EXISTS CITIZEN_MASTER"))
        metadata.create_all(engine, checkfirst=False)
        rows = []
        for p in people:
            address = p.address.translate(_URDU_DIGITS) if rng.random() < 0.3 else p.address
            rows.append(
                {
                    "CNIC_NO": p.cnic,
                    "FIRST_NM": p.first.upper(),
                    "LAST_NM": p.family.upper(),
                    "NAME_URDU": p.name_ur if rng.random() < 0.9 else None,
                    "FH_FLAG": "H" if p.guardian_relation == "husband" else "F",
                    "FH_NAME": p.guardian.upper(),
                    "FH_NAME_URDU": p.guardian_ur,
                    "GENDER_CD": "M" if p.gender == "male" else "F",
                    "DOB_TXT": _legacy_date(p, rng),
                    "ADDR_LINE": f"  {address}  ",
                    "UC_CD": p.union_council,
                    "UC_NM": p.union_council_name,
                    "TEHSIL_NM": p.tehsil,
                    "DISTRICT_CD": p.district.code,
                    "PROVINCE_CD": p.district.province_code,
                    "REC_STATUS": "A",
                }
            )
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    finally:
        engine.dispose()


def _driver(url: str) -> str:
    for plain, driver in (
        ("postgresql://", "postgresql+psycopg://"),
        ("mysql://", "mysql+pymysql://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def write_district_codes(path: Path) -> None:
    """NADRA's district code table, as the CSV its adapter configuration reads."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["code", "district"])
    writer.writerows((d.code, d.name) for d in DISTRICTS)
    write_atomic(path, buffer.getvalue().encode("utf-8"))


def _share(n: int, i: int) -> str:
    return {1: ("1/1",), 2: ("1/2", "1/2"), 3: ("1/2", "1/4", "1/4")}[n][i]


def land_parcels(people: list[Person], rng: random.Random, count: int) -> list[dict[str, object]]:
    """Parcels in Punjab districts, owned by Punjab's synthetic citizens."""
    punjabis = [p for p in people if p.district.province == "Punjab"] or people
    parcels = []
    for i in range(count):
        owners = rng.sample(punjabis, k=min(len(punjabis), rng.choice((1, 1, 2, 3))))
        district = owners[0].district
        mauza_no = rng.randrange(1, 400)
        khasras = sorted(
            {f"{rng.randrange(1, 5000)}" + rng.choice(("", "", "/1", "/2")) for _ in range(3)}
        )[: rng.randint(1, 3)]
        mutations = sorted(
            (
                dt.date(rng.randrange(1995, 2025), rng.randrange(1, 13), rng.randrange(1, 29)),
                str(rng.randrange(100, 99999)),
                rng.choice(_MUTATIONS),
            )
            for _ in range(rng.randint(1, 3))
        )
        parcels.append(
            {
                "id": f"PB-{district.name[:3].upper()}-{mauza_no:04d}-{i + 1:05d}",
                "district": district.name,
                "tehsil": rng.choice(district.tehsils),
                "mauza": rng.choice(_MAUZAS),
                "mauza_code": f"{mauza_no:04d}",
                "khewat": str(rng.randrange(1, 2000)),
                "khatooni": str(rng.randrange(1, 3000)),
                "khasras": khasras,
                "kanal": rng.randrange(0, 40),
                "marla": rng.randrange(0, 20),
                "owners": [
                    {
                        "cnic": o.cnic,
                        "name": o.name,
                        "name_ur": o.name_ur,
                        "share": _share(len(owners), j),
                    }
                    for j, o in enumerate(owners)
                ],
                # Dates as the fard prints them; kinds in the revenue department's words.
                "mutations": [
                    {"number": number, "date": day.strftime("%d-%m-%Y"), "kind": kind}
                    for day, number, kind in mutations
                ],
                "as_of": mutations[-1][0].strftime("%d-%m-%Y"),
            }
        )
    return parcels


def _files_spec(name: str, environ: dict[str, str]) -> FilesService:
    cfg, _ = load_config(config_path(name), environ)
    (spec,) = cfg.services.values()
    assert isinstance(spec, FilesService)
    return spec


def property_tax_layout(environ: dict[str, str]) -> FixedWidthFormat:
    """The property tax extract's record layout, as the LMC adapter configuration declares it."""
    record = _files_spec("lmc", environ).record
    assert isinstance(record, FixedWidthFormat)
    return record


def property_tax_extract(
    people: list[Person], rng: random.Random, layout: FixedWidthFormat, year: int
) -> tuple[bytes, dict[str, str]]:
    """One night's extract for fiscal year ``year``-``year+1``, for Lahore's property owners:
    (file bytes, each property id's owner CNIC). Amounts are whole rupees; the status says what
    was paid."""
    owners = [p for p in people if p.district.name == "Lahore"] or people[:10]
    records = []
    owned = {}
    for i, owner in enumerate(owners, start=1):
        code, town = rng.choice(_TOWNS)
        rental = rng.randrange(60_000, 2_400_000)
        tax = (rental * rng.choice((5, 10, 20))) // 100
        status = rng.choice("AAPQLE")
        paid = {"P": tax, "Q": tax // 2}.get(status, 0)
        property_id = f"LHR-{code}-{i:06d}"
        owned[property_id] = owner.cnic
        records.append(
            layout.encode(
                {
                    "PROPERTY_ID": property_id,
                    "OWNER_CNIC": int(owner.cnic),
                    "OWNER_NAME": owner.name.upper(),
                    "ADDRESS": f"{rng.randint(1, 300)}-{rng.choice('ABCDEFGH')} {town}",
                    "RATING_AREA": town.upper(),
                    "FISCAL_YR": year * 100 + (year + 1) % 100,
                    "CATEGORY": rng.choice("RRTCI"),
                    "COVERED_SQFT": rng.randrange(500, 12_000),
                    "ANNUAL_RENTAL_VALUE": rental,
                    "TAX_DUE": tax,
                    "TAX_PAID": paid,
                    "DUE_DATE": f"{year}0930" if status != "E" else "00000000",
                    "STATUS": status,
                }
            )
        )
    records.append(layout.encode_trailer(len(records)))
    return b"".join(records), owned


def birth_sheet(people: list[Person], rng: random.Random, council: int) -> tuple[bytes, list[str]]:
    """One union council's monthly sheet: (CSV bytes, registration numbers)."""
    fathers = [p for p in people if p.gender == "male"]
    mothers = [p for p in people if p.gender == "female"] or fathers
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "REG_NO",
            "UC_CODE",
            "UC_NAME",
            "TEHSIL",
            "DISTRICT",
            "CHILD_NAME",
            "CHILD_NAME_URDU",
            "GENDER",
            "DOB",
            "PLACE_OF_BIRTH",
            "FATHER_NAME",
            "FATHER_CNIC",
            "MOTHER_NAME",
            "MOTHER_CNIC",
            "REG_DATE",
        ]
    )
    numbers = []
    for i in range(1, 1 + min(20, len(fathers))):
        father = rng.choice(fathers)
        mother = rng.choice(mothers)
        girl = rng.random() < 0.5
        first, first_ur = ("Ayesha", "عائشہ") if girl else ("Hamza", "حمزہ")
        born_day, born_month = rng.randint(1, 28), rng.randint(1, 11)
        dob = f"{born_day:02d}/{born_month:02d}/2024"
        if rng.random() < 0.3:
            dob = dob.translate(_URDU_DIGITS)  # written by hand in Urdu digits
        number = f"LHR-UC{council:03d}-2024-{i:05d}"
        numbers.append(number)
        cnic = father.cnic if rng.random() < 0.5 else father.dashed_cnic
        writer.writerow(
            [
                number,
                f"UC-{council}",
                _COUNCILS.get(council, f"Union Council {council}"),
                "Lahore City",
                "Lahore",
                f"{first} {father.first}",
                f"{first_ur} {father.first_ur}",
                "F" if girl else "M",
                dob,
                rng.choice(_PLACES),
                father.name,
                cnic,
                mother.name,
                mother.dashed_cnic,
                f"{rng.randint(1, 28):02d}-{_MONTHS[born_month]}-24",  # the month after
            ]
        )
    return ("\ufeff" + out.getvalue()).encode("utf-8"), numbers


@dataclass(frozen=True)
class LegacyDemo:
    """What :func:`build` made: where it is, the variables the configurations need, samples."""

    directory: Path
    variables: dict[str, str]  # for load_adapters(..., environ=...); add PLRA_SOAP_URL
    people: list[Person]
    parcel_ids: list[str]
    property_owners: dict[str, str]  # property id -> owner's CNIC (13 digits)
    birth_numbers: list[str]

    @property
    def property_ids(self) -> list[str]:
        return list(self.property_owners)

    @property
    def land_records(self) -> Path:
        return self.directory / "land-records.json"


def build(
    directory: Path, *, people: int = 200, seed: int = 2026, nadra_url: str | None = None
) -> LegacyDemo:
    """Generate every legacy system's data in ``directory`` (the drops wait there to be ingested).

    ``nadra_url`` puts NADRA's registry in another database (default: SQLite
    ``nadra-legacy.db`` in ``directory``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    citizens = make_people(people, seed)
    url = nadra_url or f"sqlite:///{(directory / 'nadra-legacy.db').resolve()}"
    create_nadra_database(url, citizens, seed)
    write_district_codes(directory / "districts.csv")
    parcels = land_parcels(citizens, rng, max(5, people // 4))
    write_atomic(
        directory / "land-records.json", json.dumps(parcels, ensure_ascii=False, indent=1).encode()
    )
    variables = {"LEGACY_DIR": str(directory.resolve()), "NADRA_DB_URL": url, "PLRA_SOAP_URL": ""}
    layout = property_tax_layout(variables)
    extract, property_owners = property_tax_extract(citizens, rng, layout, 2024)
    write_atomic(directory / "property-tax" / "PTAX.D2024.EXTRACT.DAT", extract)
    births: list[str] = []
    for council in (45, 112):
        sheet, numbers = birth_sheet(citizens, rng, council)
        write_atomic(directory / "births" / f"uc{council:03d}-2024.csv", sheet)
        births.extend(numbers)
    return LegacyDemo(
        directory=directory,
        variables=variables,
        people=citizens,
        parcel_ids=[str(p["id"]) for p in parcels],
        property_owners=property_owners,
        birth_numbers=births,
    )
