# Unix seconds and the civil calendar, for the RTC of a port whose machine.RTC keeps a calendar
# (esp32, rp2: hal/machineboard.py rtc() and set_rtc() load this module then).
def _days(y, m, d):
    # days from 1970-01-01 to the date (proleptic Gregorian; H. Hinnant's days_from_civil)
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def unix_time(y, mo, d, h, mi, s):
    return _days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s


def civil(t):
    # unix seconds -> (year, month, day, hour, minute, second, weekday 0 = Monday)
    days, rem = divmod(t, 86400)
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = mp + (3 if mp < 10 else -9)
    y = yoe + era * 400 + (mo <= 2)
    return y, mo, d, rem // 3600, rem // 60 % 60, rem % 60, (days + 3) % 7
