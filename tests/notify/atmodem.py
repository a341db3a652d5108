"""A GSM modem's AT command set on a pty, enough for python-gsmmodem-new to connect and send SMS.

It stands in for the modem hardware only: the notifier's real code (agent/notify/modem.py and the
library under it) opens the pty's slave as its serial port. Every submitted PDU is kept and can
be decoded with gsmmodem.pdu; `fail_next` makes the next submissions answer +CMS ERROR.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from typing import Any

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


class AtModem:
    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open so the pty stays up between connections
        self.commands: list[str] = []
        self.pdus: list[str] = []
        self.fail_next = 0
        self.inbox: dict[int, str] = {}  # stored received SMS (PDU hex) by index
        self.deleted = threading.Event()  # set when the notifier deleted a received SMS
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _answer(self, line: str) -> bytes:
        cmd = line.strip().upper()
        replies = {
            "AT+CFUN?": b"\r\n+CFUN: 1\r\n" + OK,
            "AT+CPIN?": b"\r\n+CPIN: READY\r\n" + OK,
            "AT+CLAC": b"\r\n+CLAC: +CMGS,+CSCS,+CMGF,+CPMS,+CNMI,+CLIP,+CRC,+CSCA,+CSMP,+CMEE\r\n" + OK,
            "AT+CGMI": b"\r\nQuectel\r\n" + OK,
            "AT+CSCA?": b'\r\n+CSCA: "+8613800100500",145\r\n' + OK,
            "AT+CPMS=?": b'\r\n+CPMS: ("ME","SM"),("ME","SM"),("ME","SM")\r\n' + OK,
            "AT+CSCS=?": b'\r\n+CSCS: ("GSM","UCS2","IRA")\r\n' + OK,
            "AT+CSCS?": b'\r\n+CSCS: "GSM"\r\n' + OK,
            "AT+WIND?": ERROR,
            "AT+ZPAS?": ERROR,
        }
        if cmd in replies:
            return replies[cmd]
        if cmd.startswith("AT+CMGS="):
            return b"\r\n> "
        if cmd.startswith("AT+CMGR="):
            pdu = self.inbox.get(int(cmd.split("=", 1)[1]))
            if pdu is None:
                return b"\r\n+CMS ERROR: 321\r\n"
            return f"\r\n+CMGR: 0,,{len(pdu) // 2 - 1}\r\n{pdu}\r\n".encode() + OK

        return OK if cmd.startswith("AT") else ERROR

    def _run(self) -> None:
        buf = b""
        pdu_mode = False
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            buf += data
            while True:
                if pdu_mode:
                    end = buf.find(b"\x1a")
                    if end < 0:
                        break
                    pdu, buf = buf[:end].decode().strip(), buf[end + 1 :]
                    pdu_mode = False
                    with self._cv:
                        if self.fail_next:
                            self.fail_next -= 1
                            reply = b"\r\n+CMS ERROR: 500\r\n"
                        else:
                            self.pdus.append(pdu)
                            reply = b"\r\n+CMGS: " + str(len(self.pdus) % 256).encode() + b"\r\n" + OK
                        self._cv.notify_all()
                    os.write(self.master, reply)
                    continue
                end = buf.find(b"\r")
                if end < 0:
                    break
                line, buf = buf[:end].decode(errors="replace"), buf[end + 1 :].lstrip(b"\n")
                if not line.strip():
                    continue
                with self._cv:
                    self.commands.append(line.strip())
                reply = self._answer(line)
                if reply == b"\r\n> ":
                    pdu_mode = True
                os.write(self.master, reply)
                if line.strip().upper().startswith("AT+CMGD="):  # deleted once the answer is out
                    self.inbox.pop(int(line.split("=", 1)[1].split(",")[0]), None)
                    self.deleted.set()

    def receive(self, number: str, text: str) -> None:
        """An SMS arrives from `number`: stored as an SMS-DELIVER PDU and announced with +CMTI."""
        import datetime as dt

        from gsmmodem.pdu import _encodeTimestamp, encodeGsm7, encodeSemiOctets, packSeptets

        digits = number.lstrip("+")
        pdu = bytearray([0x00, 0x04, len(digits), 0x91]) + encodeSemiOctets(digits)
        pdu += bytearray([0x00, 0x00]) + _encodeTimestamp(dt.datetime.now(dt.UTC))
        septets = encodeGsm7(text)
        pdu += bytearray([len(septets)]) + packSeptets(septets)
        index = len(self.inbox) + 1
        self.inbox[index] = pdu.hex().upper()
        os.write(self.master, f'\r\n+CMTI: "ME",{index}\r\n'.encode())

    def messages(self) -> list[dict[str, Any]]:
        """The submitted SMS, concatenated parts joined: [{number, text}]."""
        from gsmmodem.pdu import decodeSmsPdu

        out: list[dict[str, Any]] = []
        parts: dict[int, dict[int, str]] = {}
        with self._cv:
            pdus = list(self.pdus)
        for pdu in pdus:
            sms = decodeSmsPdu(pdu)
            udh = sms.get("udh") or []
            concat = next((u for u in udh if hasattr(u, "reference")), None)
            if concat is None:
                out.append({"number": sms["number"], "text": sms["text"]})
                continue
            parts.setdefault(concat.reference, {})[concat.number] = sms["text"]
            if len(parts[concat.reference]) == concat.parts:
                text = "".join(parts[concat.reference][i] for i in sorted(parts[concat.reference]))
                out.append({"number": sms["number"], "text": text})
        return out

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: len(self.messages_unlocked()) >= count, timeout)

    def messages_unlocked(self) -> list[str]:
        return self.pdus

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        os.close(self.master)
        os.close(self._slave)
