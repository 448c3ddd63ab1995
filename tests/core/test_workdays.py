"""The 8-jours-ouvrés clock, proved against a table worked out by hand.

Every expected date below was counted on a printed calendar (python -m calendar), one
working day at a time; the comment on each row is that count, so a reviewer can redo
it without trusting the code. The table is the specification: if the `holidays`
package changes its mind about a date, these rows say which answer the service
contract (DOMAIN.md, "Working days") expects.

Weekdays used (checked with calendar.weekday): 2025-08-15 Fri, 2025-12-25 Thu,
2025-12-26 Fri, 2026-01-01 Thu, 2026-03-12 Thu, 2026-04-03 Fri (Good Friday),
2026-04-06 Mon (Easter Monday), 2026-04-27 Mon, 2026-05-01 Fri, 2026-05-08 Fri,
2026-05-14 Thu (Ascension), 2026-05-22 Fri, 2026-05-25 Mon (Whit Monday), 2026-05-27 Wed,
2026-06-10 Wed, 2026-07-14 Tue, 2026-07-21 Tue, 2026-08-15 Sat, 2026-11-11 Wed,
2026-12-26 Sat, 2027-01-01 Fri, 2027-11-01 Mon, 2027-11-11 Thu, 2027-12-20 Mon,
2027-12-25 Sat.
"""

from __future__ import annotations

import calendar
from datetime import date

import pytest

from flux_pmi.core.workdays import add_working_days, count_working_days, deadline, is_working_day

D = date.fromisoformat

# (received, département, expected deadline = received + 8 jours ouvrés, start not counted)
DEADLINES = [
    # 1. Mon 2026-03-02, no holiday: Tue3(1) Wed4(2) Thu5(3) Fri6(4) Mon9(5) Tue10(6) Wed11(7) Thu12(8).
    ("2026-03-02", "035", "2026-03-12"),
    # 2. Fri 2026-03-06: Sat7/Sun8 skipped; Mon9(1) 10(2) 11(3) 12(4) Fri13(5) Mon16(6) 17(7) Wed18(8).
    ("2026-03-06", "035", "2026-03-18"),
    # 3. Sat 2026-03-07 (received on a weekend): Sun8 skipped; Mon9(1) .. Fri13(5) Mon16(6) 17(7) Wed18(8).
    ("2026-03-07", "035", "2026-03-18"),
    # 4. Easter, Ille-et-Vilaine. Thu 2026-04-02: Fri3 Good Friday is worked in 035 (1); Sat4/Sun5;
    #    Mon6 Easter Monday skipped; Tue7(2) Wed8(3) Thu9(4) Fri10(5) Mon13(6) Tue14(7) Wed15(8).
    ("2026-04-02", "035", "2026-04-15"),
    # 5-7. Same start in Alsace-Moselle: Fri3 Good Friday AND Mon6 Easter Monday skipped;
    #    Tue7(1) Wed8(2) Thu9(3) Fri10(4) Mon13(5) Tue14(6) Wed15(7) Thu16(8).
    ("2026-04-02", "057", "2026-04-16"),
    ("2026-04-02", "067", "2026-04-16"),
    ("2026-04-02", "068", "2026-04-16"),
    # 8. Received on Easter Monday 2026-04-06 itself (035): Tue7(1) 8(2) 9(3) Fri10(4) Mon13(5) 14(6) 15(7) Thu16(8).
    ("2026-04-06", "035", "2026-04-16"),
    # 9. 1 May and 8 May 2026 are Fridays, then Ascension Thu 14 May. Thu 2026-04-30: Fri1 skipped;
    #    Mon4(1) Tue5(2) Wed6(3) Thu7(4); Fri8 skipped; Mon11(5) Tue12(6) Wed13(7); Thu14 skipped; Fri15(8).
    ("2026-04-30", "035", "2026-05-15"),
    # 10. Ascension. Mon 2026-05-11: Tue12(1) Wed13(2); Thu14 skipped; Fri15(3) Mon18(4) Tue19(5) Wed20(6)
    #     Thu21(7) Fri22(8).
    ("2026-05-11", "035", "2026-05-22"),
    # 11. Whit Monday. Wed 2026-05-20: Thu21(1) Fri22(2); Mon25 skipped; Tue26(3) Wed27(4) Thu28(5) Fri29(6)
    #     Mon Jun1(7) Tue2(8).
    ("2026-05-20", "035", "2026-06-02"),
    # 12. Martinique, same start: Thu21(1); Fri22 abolition day skipped; Mon25 skipped; Tue26(2) Wed27(3)
    #     Thu28(4) Fri29(5) Mon1(6) Tue2(7) Wed3(8).
    ("2026-05-20", "972", "2026-06-03"),
    # 13. Guadeloupe, same start: Thu21(1) Fri22(2) (22 May is Martinique's only); Mon25 skipped; Tue26(3);
    #     Wed27 abolition day skipped; Thu28(4) Fri29(5) Mon1(6) Tue2(7) Wed3(8).
    ("2026-05-20", "971", "2026-06-03"),
    # 14. La Réunion, same start: neither 22 nor 27 May is its day: as 035.
    ("2026-05-20", "974", "2026-06-02"),
    # 15. Guyane. Fri 2026-06-05: Mon8(1) Tue9(2); Wed10 abolition day skipped; Thu11(3) Fri12(4) Mon15(5)
    #     Tue16(6) Wed17(7) Thu18(8).
    ("2026-06-05", "973", "2026-06-18"),
    # 16. Same start in 035: Mon8(1) Tue9(2) Wed10(3) Thu11(4) Fri12(5) Mon15(6) Tue16(7) Wed17(8).
    ("2026-06-05", "035", "2026-06-17"),
    # 17. Mayotte. Fri 2026-04-24: Mon27 abolition day skipped; Tue28(1) Wed29(2) Thu30(3); Fri May1 skipped;
    #     Mon4(4) Tue5(5) Wed6(6) Thu7(7); Fri8 skipped; Mon11(8).
    ("2026-04-24", "976", "2026-05-11"),
    # 18. Same start in 035: Mon27(1) Tue28(2) Wed29(3) Thu30(4); Fri1 skipped; Mon4(5) Tue5(6) Wed6(7) Thu7(8).
    ("2026-04-24", "035", "2026-05-07"),
    # 19. 14 July 2026 (Tue). Fri 2026-07-10: Mon13(1); Tue14 skipped; Wed15(2) Thu16(3) Fri17(4) Mon20(5)
    #     Tue21(6) Wed22(7) Thu23(8).
    ("2026-07-10", "035", "2026-07-23"),
    # 20. Guadeloupe around 21 July (fête Victor Schœlcher, a day off there, as the holidays package
    #     has it). Fri 2026-07-17: Mon20(1) Tue21 skipped, Wed22(2) Thu23(3) Fri24(4) Mon27(5) Tue28(6)
    #     Wed29(7) Thu30(8).
    ("2026-07-17", "971", "2026-07-30"),
    # 21. Martinique, same day off and same count.
    ("2026-07-17", "972", "2026-07-30"),
    # 22. Guadeloupe also keeps Good Friday. Thu 2026-04-02: Fri3 skipped, Mon6 (Easter Monday) skipped,
    #     Tue7(1) Wed8(2) Thu9(3) Fri10(4) Mon13(5) Tue14(6) Wed15(7) Thu16(8).
    ("2026-04-02", "971", "2026-04-16"),
    # 23. Guadeloupe, Mi-Carême (Thu 2026-03-12). Tue 2026-03-10: Wed11(1) Thu12 skipped, Fri13(2)
    #     Mon16(3) Tue17(4) Wed18(5) Thu19(6) Fri20(7) Mon23(8).
    ("2026-03-10", "971", "2026-03-23"),
    # 24. 15 August 2025 is a Friday. Wed 2025-08-13: Thu14(1); Fri15 skipped; Mon18(2) Tue19(3) Wed20(4)
    #     Thu21(5) Fri22(6) Mon25(7) Tue26(8).
    ("2025-08-13", "035", "2025-08-26"),
    # 25. 15 August 2026 is a Saturday: it costs nothing (no substitute day). Thu 2026-08-13: Fri14(1)
    #     Mon17(2) Tue18(3) Wed19(4) Thu20(5) Fri21(6) Mon24(7) Tue25(8).
    ("2026-08-13", "035", "2026-08-25"),
    # 26. 1 and 11 November 2027 (Mon and Thu). Fri 2027-10-29: Mon Nov1 skipped; Tue2(1) Wed3(2) Thu4(3)
    #     Fri5(4) Mon8(5) Tue9(6) Wed10(7); Thu11 skipped; Fri12(8).
    ("2027-10-29", "035", "2027-11-12"),
    # 27. 11 November 2026 (Wed). Mon 2026-11-09: Tue10(1); Wed11 skipped; Thu12(2) Fri13(3) Mon16(4)
    #     Tue17(5) Wed18(6) Thu19(7) Fri20(8).
    ("2026-11-09", "035", "2026-11-20"),
    # 28. Christmas and New Year, 035. Tue 2025-12-23: Wed24(1); Thu25 skipped; Fri26(2) (worked in 035);
    #     Mon29(3) Tue30(4) Wed31(5); Thu Jan1 skipped; Fri2(6) Mon5(7) Tue6(8).
    ("2025-12-23", "035", "2026-01-06"),
    # 29-30. Same start in Alsace-Moselle: Fri 26 December skipped too, so one day later:
    #     Wed24(1) Mon29(2) Tue30(3) Wed31(4) Fri2(5) Mon5(6) Tue6(7) Wed7(8).
    ("2025-12-23", "067", "2026-01-07"),
    ("2025-12-23", "057", "2026-01-07"),
    # 31. New Year 2027 (Fri). Wed 2026-12-30: Thu31(1); Fri Jan1 skipped; Mon4(2) Tue5(3) Wed6(4) Thu7(5)
    #     Fri8(6) Mon11(7) Tue12(8).
    ("2026-12-30", "035", "2027-01-12"),
    # 32. La Réunion's 20 December 2027 (Mon). Fri 2027-12-17: Mon20 skipped; Tue21(1) Wed22(2) Thu23(3)
    #     Fri24(4); Sat25 Christmas falls on a weekend; Mon27(5) Tue28(6) Wed29(7) Thu30(8).
    ("2027-12-17", "974", "2027-12-30"),
    # 33. Same start in 035: Mon20(1) Tue21(2) Wed22(3) Thu23(4) Fri24(5) Mon27(6) Tue28(7) Wed29(8).
    ("2027-12-17", "035", "2027-12-29"),
    # 34. Corsica has no local day: Easter as row 4.
    ("2026-04-02", "02A", "2026-04-15"),
]


@pytest.mark.parametrize(("received", "dept", "expected"), DEADLINES)
def test_deadline_is_eight_working_days_after_receipt(received, dept, expected):
    assert deadline(D(received), dept) == D(expected)


@pytest.mark.parametrize(("received", "dept", "expected"), DEADLINES)
def test_counting_back_the_table_gives_eight(received, dept, expected):
    assert count_working_days(D(received), D(expected), dept) == 8


def test_the_table_is_long_enough_and_its_weekdays_are_the_ones_the_comments_say():
    assert len(DEADLINES) >= 20
    # The weekday claims the comments rest on, re-checked against the calendar module.
    claims = {
        "2025-08-15": "Fri",
        "2025-12-26": "Fri",
        "2026-04-03": "Fri",
        "2026-04-06": "Mon",
        "2026-04-27": "Mon",
        "2026-05-14": "Thu",
        "2026-05-22": "Fri",
        "2026-05-25": "Mon",
        "2026-05-27": "Wed",
        "2026-06-10": "Wed",
        "2026-07-14": "Tue",
        "2026-08-15": "Sat",
        "2026-11-11": "Wed",
        "2026-12-26": "Sat",
        "2027-01-01": "Fri",
        "2027-11-01": "Mon",
        "2027-12-20": "Mon",
        "2027-12-25": "Sat",
    }
    for day, name in claims.items():
        assert calendar.day_abbr[calendar.weekday(*map(int, day.split("-")))] == name, day


# (day, département, is it a working day?)
WORKING = [
    ("2026-11-21", "035", False),  # Saturday
    ("2026-11-22", "035", False),  # Sunday
    ("2026-11-23", "035", True),  # Monday, no holiday
    ("2026-04-03", "035", True),  # Good Friday: worked outside Alsace-Moselle
    ("2026-04-03", "057", False),  # Good Friday, Moselle
    ("2026-04-03", "067", False),  # Good Friday, Bas-Rhin
    ("2026-04-03", "068", False),  # Good Friday, Haut-Rhin
    ("2026-04-03", "974", True),  # Good Friday: not a La Réunion holiday
    ("2025-12-26", "035", True),  # 26 December: worked outside Alsace-Moselle
    ("2025-12-26", "057", False),  # 26 December, Moselle
    ("2025-12-26", "068", False),  # 26 December, Haut-Rhin
    ("2026-04-27", "976", False),  # Mayotte's abolition day
    ("2026-04-27", "035", True),
    ("2026-05-22", "972", False),  # Martinique's abolition day
    ("2026-05-22", "971", True),
    ("2026-05-27", "971", False),  # Guadeloupe's abolition day
    ("2026-05-27", "972", True),
    ("2026-06-10", "973", False),  # Guyane's abolition day
    ("2026-06-10", "974", True),
    ("2027-12-20", "974", False),  # La Réunion's abolition day (a Monday in 2027)
    ("2027-12-20", "976", True),
    ("2026-07-21", "971", False),  # Victor Schœlcher day
    ("2026-07-21", "972", False),
    ("2026-07-21", "973", True),
    ("2026-03-12", "971", False),  # Mi-Carême
    ("2026-05-14", "971", False),  # Ascension is national, overseas too
    ("2026-05-25", "976", False),  # Whit Monday is national, overseas too
]


@pytest.mark.parametrize(("day", "dept", "expected"), WORKING)
def test_is_working_day(day, dept, expected):
    assert is_working_day(D(day), dept) is expected


# (start, end, département, jours ouvrés in (start, end])
COUNTS = [
    ("2026-11-23", "2026-11-23", "035", 0),  # empty interval
    ("2026-11-23", "2026-11-20", "035", 0),  # end before start
    ("2026-11-20", "2026-11-23", "035", 1),  # Fri -> Mon: Sat, Sun skipped, Mon counted
    ("2026-11-21", "2026-11-22", "035", 0),  # a weekend only
    ("2026-11-23", "2026-12-02", "067", 7),  # Tue24 Wed25 Thu26 Fri27 Mon30 Tue1 Wed2
    ("2026-11-23", "2026-12-07", "067", 10),  # the 7 above, then Thu3 Fri4 Mon7
    ("2026-11-23", "2026-11-25", "067", 2),  # Tue24 Wed25
    ("2026-04-02", "2026-04-07", "035", 2),  # Fri3 and Tue7; Easter Monday skipped
    ("2026-04-02", "2026-04-07", "067", 1),  # Tue7 only; Good Friday and Easter Monday skipped
    ("2025-12-24", "2026-01-02", "035", 5),  # Fri26 Mon29 Tue30 Wed31 Fri2; 25 Dec and 1 Jan skipped
    ("2025-12-24", "2026-01-02", "057", 4),  # the same without Fri 26
    ("2027-12-17", "2027-12-24", "974", 4),  # Tue21 Wed22 Thu23 Fri24; Mon20 skipped
]


@pytest.mark.parametrize(("start", "end", "dept", "expected"), COUNTS)
def test_count_working_days(start, end, dept, expected):
    assert count_working_days(D(start), D(end), dept) == expected


def test_add_working_days_small_steps():
    # Fri 2026-04-03 in 035 + 1: Sat, Sun, Easter Monday skipped -> Tue 7 April.
    assert add_working_days(D("2026-04-03"), 1, "035") == D("2026-04-07")
    # Wed 2026-05-13 + 1: Ascension Thu 14 skipped -> Fri 15.
    assert add_working_days(D("2026-05-13"), 1, "035") == D("2026-05-15")
    # Mon 2026-07-13 + 1: 14 July skipped -> Wed 15.
    assert add_working_days(D("2026-07-13"), 1, "035") == D("2026-07-15")
    # 0 days: the start itself, even on a Sunday.
    assert add_working_days(D("2026-11-22"), 0, "035") == D("2026-11-22")
    with pytest.raises(ValueError):
        add_working_days(D("2026-11-23"), -1, "035")
