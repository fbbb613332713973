"""Synthetic Pakistani citizens for the demo's legacy systems: names in English and Urdu,
valid-format CNICs and real provinces, districts and tehsils.

Everything is drawn from a seeded random generator, so a seed always gives the
same federation. The people are made once and shared by every legacy system:
the citizen NADRA knows owns the land parcel, pays the property tax and is
the father on the birth registration, as in life.

CNICs follow the real structure: the first digit is the province (1 Khyber
Pakhtunkhwa, 3 Punjab, 4 Sindh, 5 Balochistan, 6 Islamabad), the first five
digits the locality, and the last digit is odd for men and even for women.
The numbers are random; no real person's CNIC is generated on purpose.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

__all__ = ["DISTRICTS", "District", "Person", "make_people"]


@dataclass(frozen=True)
class District:
    code: str  # the legacy systems' district code
    name: str
    name_ur: str
    province: str
    province_code: str  # two letters, as NADRA's legacy tables keep it
    locality: str  # first five CNIC digits
    tehsils: tuple[str, ...]


DISTRICTS: tuple[District, ...] = (
    District(
        "101",
        "Lahore",
        "لاہور",
        "Punjab",
        "PB",
        "35202",
        ("Lahore City", "Lahore Cantt", "Model Town", "Raiwind", "Shalimar"),
    ),
    District(
        "102",
        "Rawalpindi",
        "راولپنڈی",
        "Punjab",
        "PB",
        "37405",
        ("Rawalpindi", "Gujar Khan", "Kahuta", "Murree", "Taxila"),
    ),
    District(
        "103",
        "Faisalabad",
        "فیصل آباد",
        "Punjab",
        "PB",
        "33100",
        ("Faisalabad City", "Jaranwala", "Samundri", "Tandlianwala", "Chak Jhumra"),
    ),
    District(
        "104",
        "Multan",
        "ملتان",
        "Punjab",
        "PB",
        "36302",
        ("Multan City", "Multan Saddar", "Shujabad", "Jalalpur Pirwala"),
    ),
    District(
        "105",
        "Gujranwala",
        "گوجرانوالہ",
        "Punjab",
        "PB",
        "34101",
        ("Gujranwala City", "Kamoke", "Nowshera Virkan", "Wazirabad"),
    ),
    District(
        "106",
        "Sheikhupura",
        "شیخوپورہ",
        "Punjab",
        "PB",
        "35404",
        ("Sheikhupura", "Ferozewala", "Muridke", "Safdarabad", "Sharaqpur"),
    ),
    District(
        "107",
        "Sialkot",
        "سیالکوٹ",
        "Punjab",
        "PB",
        "34603",
        ("Sialkot", "Daska", "Pasrur", "Sambrial"),
    ),
    District(
        "201",
        "Karachi South",
        "کراچی جنوبی",
        "Sindh",
        "SD",
        "42301",
        ("Saddar", "Lyari", "Garden", "Arambagh"),
    ),
    District(
        "202",
        "Hyderabad",
        "حیدرآباد",
        "Sindh",
        "SD",
        "41306",
        ("Hyderabad City", "Latifabad", "Qasimabad", "Hyderabad Rural"),
    ),
    District(
        "203",
        "Sukkur",
        "سکھر",
        "Sindh",
        "SD",
        "45504",
        ("Sukkur City", "Rohri", "Pano Akil", "Salehpat"),
    ),
    District(
        "301",
        "Peshawar",
        "پشاور",
        "Khyber Pakhtunkhwa",
        "KP",
        "17301",
        ("Peshawar City", "Shah Alam", "Mathra", "Badaber", "Chamkani"),
    ),
    District(
        "302",
        "Mardan",
        "مردان",
        "Khyber Pakhtunkhwa",
        "KP",
        "16101",
        ("Mardan", "Takht Bhai", "Katlang"),
    ),
    District(
        "303",
        "Abbottabad",
        "ایبٹ آباد",
        "Khyber Pakhtunkhwa",
        "KP",
        "13101",
        ("Abbottabad", "Havelian", "Lora"),
    ),
    District(
        "401", "Quetta", "کوئٹہ", "Balochistan", "BL", "54400", ("Quetta City", "Quetta Saddar")
    ),
    District(
        "501",
        "Islamabad",
        "اسلام آباد",
        "Islamabad Capital Territory",
        "IC",
        "61101",
        ("Islamabad",),
    ),
)

_MEN = (
    ("Muhammad", "محمد"),
    ("Ahmed", "احمد"),
    ("Ali", "علی"),
    ("Hassan", "حسن"),
    ("Usman", "عثمان"),
    ("Bilal", "بلال"),
    ("Imran", "عمران"),
    ("Farhan", "فرحان"),
    ("Kamran", "کامران"),
    ("Zeeshan", "ذیشان"),
    ("Asad", "اسد"),
    ("Hamza", "حمزہ"),
    ("Faisal", "فیصل"),
    ("Tariq", "طارق"),
    ("Naveed", "نوید"),
    ("Shahid", "شاہد"),
    ("Waqas", "وقاص"),
    ("Junaid", "جنید"),
    ("Saad", "سعد"),
    ("Umar", "عمر"),
)
_WOMEN = (
    ("Ayesha", "عائشہ"),
    ("Fatima", "فاطمہ"),
    ("Zainab", "زینب"),
    ("Maryam", "مریم"),
    ("Sana", "ثناء"),
    ("Hina", "حنا"),
    ("Amna", "آمنہ"),
    ("Saima", "صائمہ"),
    ("Nadia", "نادیہ"),
    ("Rabia", "رابعہ"),
    ("Sadia", "سعدیہ"),
    ("Iqra", "اقراء"),
    ("Mehwish", "مہوش"),
    ("Bushra", "بشریٰ"),
    ("Khadija", "خدیجہ"),
    ("Asma", "اسماء"),
)
_FAMILIES = (
    ("Khan", "خان"),
    ("Malik", "ملک"),
    ("Qureshi", "قریشی"),
    ("Butt", "بٹ"),
    ("Chaudhry", "چوہدری"),
    ("Sheikh", "شیخ"),
    ("Rana", "رانا"),
    ("Awan", "اعوان"),
    ("Raja", "راجہ"),
    ("Abbasi", "عباسی"),
    ("Siddiqui", "صدیقی"),
    ("Hashmi", "ہاشمی"),
    ("Mirza", "مرزا"),
    ("Bhatti", "بھٹی"),
    ("Gondal", "گوندل"),
    ("Ansari", "انصاری"),
)
_STREETS = (
    "Shadman",
    "Gulberg",
    "Model Town",
    "Johar Town",
    "Samanabad",
    "Iqbal Town",
    "Garden Town",
    "Satellite Town",
)


@dataclass(frozen=True)
class Person:
    cnic: str  # 13 digits, no dashes, as legacy systems keep it
    first: str
    first_ur: str
    family: str
    family_ur: str
    gender: str  # male | female
    born: dt.date
    guardian_relation: str  # father | husband
    guardian: str
    guardian_ur: str
    district: District
    tehsil: str
    union_council: str  # code, e.g. UC-45
    union_council_name: str
    address: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.family}"

    @property
    def name_ur(self) -> str:
        return f"{self.first_ur} {self.family_ur}"

    @property
    def dashed_cnic(self) -> str:
        return f"{self.cnic[:5]}-{self.cnic[5:12]}-{self.cnic[12]}"


def make_people(count: int, seed: int = 2026) -> list[Person]:
    """``count`` distinct synthetic citizens, the same ones for the same seed."""
    rng = random.Random(seed)
    people: list[Person] = []
    used: set[str] = set()
    while len(people) < count:
        district = rng.choice(DISTRICTS)
        gender = rng.choice(("male", "female"))
        last = rng.choice("13579" if gender == "male" else "02468")
        cnic = district.locality + f"{rng.randrange(10**7):07d}" + last
        if cnic in used:
            continue
        used.add(cnic)
        first, first_ur = rng.choice(_MEN if gender == "male" else _WOMEN)
        family, family_ur = rng.choice(_FAMILIES)
        married = gender == "female" and rng.random() < 0.5
        guardian_first, guardian_first_ur = rng.choice(_MEN)
        guardian_family, guardian_family_ur = (
            rng.choice(_FAMILIES) if married else (family, family_ur)
        )
        born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(365 * 55))
        tehsil = rng.choice(district.tehsils)
        people.append(
            Person(
                cnic=cnic,
                first=first,
                first_ur=first_ur,
                family=family,
                family_ur=family_ur,
                gender=gender,
                born=born,
                guardian_relation="husband" if married else "father",
                guardian=f"{guardian_first} {guardian_family}",
                guardian_ur=f"{guardian_first_ur} {guardian_family_ur}",
                district=district,
                tehsil=tehsil,
                union_council=f"UC-{rng.randint(1, 150)}",
                union_council_name=rng.choice(_STREETS),
                address=f"House {rng.randint(1, 400)}, Street {rng.randint(1, 40)}, "
                f"{rng.choice(_STREETS)}",
            )
        )
    return people
