# Times to the second, year first, with the zone: an operator comparing an attempt
# in the admin with a log line or an API answer needs the seconds.
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
