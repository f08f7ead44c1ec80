#!/usr/bin/env python3
"""Writes the RFC 4733 DTMF captures that dtmf_uac.xml / dtmf_uas.xml play with play_pcap_audio.

Why not SIPp's own /usr/share/sip-tester/dtmf_2833_X.pcap: SIPp replays a capture's RTP headers as they
are, and those twelve files carry fixed sequence numbers and timestamps ('1' < '0' < '2' < ... < '*' < '#').
Asterisk drops an RFC 4733 end packet whose timestamp is not greater than the last end it took, so with the
stock files a repeated digit ("22") or a lower one after a higher one ("*2") is lost, and a lost end leaves
the digit open until Asterisk's DTMF timeout, which garbles the next digits too.

Here every digit exists once per position pos (0..POSITIONS-1) in the call: pos_PP_NAME.pcap, NAME in
0-9, star, pound. Position p has RTP timestamp BASE_TS + p * TS_STEP and sequence numbers
BASE_SEQ + p * SEQ_STEP + k, so the digits of one call, played in position order, only ever go forward.
Each digit: 10 packets 20 ms apart (marker on the first, duration 160..1600), then 3 end packets
(duration 1600 = 200 ms), volume 10, payload type 101, one SSRC for all. Run from anywhere:
  python3 tests/sipp/dtmf/mkpcap.py
"""
import os
import struct

POSITIONS = 12
BASE_TS, TS_STEP = 160000, 16000
BASE_SEQ, SEQ_STEP = 1000, 20
SSRC = 0x41524954  # "ARIT"
PT = 101
EVENTS = [(str(i), i) for i in range(10)] + [("star", 10), ("pound", 11)]
SRC, DST = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
SPORT, DPORT = 40000, 40002  # SIPp ignores them: it sends from its media port to the peer's


def ip_checksum(header):
    s = sum(struct.unpack("!10H", header))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def frame(rtp):
    udp = struct.pack("!HHHH", SPORT, DPORT, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, SRC, DST)
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    return b"\x00" * 12 + b"\x08\x00" + ip + udp  # ethernet: zero MACs, IPv4


def capture(pos, event):
    ts, seq = BASE_TS + pos * TS_STEP, BASE_SEQ + pos * SEQ_STEP
    packets = []  # (time in us, rtp bytes)
    for k in range(10):
        marker = 0x80 if k == 0 else 0
        payload = struct.pack("!BBH", event, 10, 160 * (k + 1))
        packets.append((k * 20000, struct.pack("!BBHII", 0x80, marker | PT, seq + k, ts, SSRC) + payload))
    for _ in range(3):  # the end packet, sent three times (RFC 4733 2.5.1.4)
        payload = struct.pack("!BBH", event, 0x80 | 10, 1600)
        packets.append((200000, struct.pack("!BBHII", 0x80, PT, seq + 10, ts, SSRC) + payload))
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for us, rtp in packets:
        f = frame(rtp)
        out += struct.pack("<IIII", 1, us, len(f), len(f)) + f
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for pos in range(POSITIONS):
        for name, event in EVENTS:
            with open(os.path.join(here, f"pos_{pos:02d}_{name}.pcap"), "wb") as f:
                f.write(capture(pos, event))


if __name__ == "__main__":
    main()
