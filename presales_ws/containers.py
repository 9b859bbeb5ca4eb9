"""Opus packets out of a recorder's WebM or Ogg stream, fed piece by piece as the client sends it.

A `MediaRecorder` stream arrives in arbitrary slices (every 100-250 ms), so each demuxer keeps the bytes of
an element or page that is not complete yet and hands out every whole Opus packet it has. They are small
and pure Python on purpose: FFmpeg's demuxers (PyAV's `av.open`) want a file they can read ahead in, which a
live socket is not, and a recorder's container carries nothing but packets. A piece that cannot be parsed is
reported (`Corrupt`) and the demuxer resynchronises at the next page (Ogg, whose pages carry a CRC) or the
next cluster or block (WebM), so one bad piece costs that piece's audio, not the session.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec

WEBM_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML header
OGG_MAGIC = b"OggS"
MAX_ELEMENT_BYTES = 64 * 1024  # a recorder's blocks are ~100 bytes; anything this large is a broken length
MAX_PENDING_BYTES = 256 * 1024  # a page or element still incomplete after this much is not one


class OpusHead(msgspec.Struct, frozen=True):
    """What the decoder needs from the stream's header: the `OpusHead` bytes and what they say."""

    data: bytes
    channels: int
    pre_skip: int  # samples at 48 kHz the decoder outputs before the audio starts


_FRAME_MS_BY_CONFIG = (
    [10, 20, 40, 60] * 3  # SILK-only: configs 0-11
    + [10, 20] * 2  # hybrid: 12-15
    + [2.5, 5, 10, 20] * 4  # CELT-only: 16-31
)


def opus_packet_s(packet: bytes) -> float:
    """An Opus packet's duration from its table-of-contents byte (RFC 6716, 3.1), without decoding it."""
    if not packet:
        return 0.0
    toc = packet[0]
    code = toc & 0x03
    frames = 1 if code == 0 else 2 if code in (1, 2) else (packet[1] & 0x3F if len(packet) > 1 else 0)
    return frames * _FRAME_MS_BY_CONFIG[toc >> 3] / 1000


def parse_opus_head(data: bytes) -> OpusHead | None:
    if len(data) < 19 or not data.startswith(b"OpusHead"):
        return None
    channels, pre_skip = data[9], struct.unpack_from("<H", data, 10)[0]
    return OpusHead(bytes(data), channels, pre_skip) if channels in (1, 2) else None


class Corrupt(msgspec.Struct, frozen=True):
    """Bytes that are not the container: `skipped` of them were dropped to find the next whole piece."""

    reason: str
    skipped: int


Demuxed = bytes | OpusHead | Corrupt  # an Opus packet, the header, or a report of bytes dropped


class _Cursor:
    """The bytes received and not yet consumed."""

    def __init__(self) -> None:
        self.data = bytearray()

    def drop(self, n: int) -> None:
        del self.data[:n]


# --- WebM (Matroska) ---------------------------------------------------------------------------------------

_SEGMENT, _CLUSTER, _TRACKS, _TRACK_ENTRY, _BLOCK_GROUP = 0x18538067, 0x1F43B675, 0x1654AE6B, 0xAE, 0xA0
_MASTERS = frozenset({_SEGMENT, _CLUSTER, _TRACKS, _TRACK_ENTRY, _BLOCK_GROUP, 0xE1})  # 0xE1: Audio
_SIMPLE_BLOCK, _BLOCK, _CODEC_PRIVATE, _TRACK_NUMBER, _CODEC_ID = 0xA3, 0xA1, 0x63A2, 0xD7, 0x86
_CLUSTER_ID = b"\x1f\x43\xb6\x75"
# Top-level and cluster-level ids a recorder writes (EBML, Segment children, Cluster children, and their
# own children we skip): anything else where an element should start means the bytes are not the stream.
_KNOWN_IDS = frozenset(
    {
        0x1A45DFA3, 0x4286, 0x42F7, 0x42F2, 0x42F3, 0x4282, 0x4287, 0x4285,  # EBML header
        0x114D9B74, 0x4DBB, 0x53AB, 0x53AC,  # SeekHead
        0x1549A966, 0x2AD7B1, 0x4489, 0x4D80, 0x5741, 0x7BA9, 0x4461, 0x73A4,  # Info
        0x1C53BB6B, 0x1254C367, 0xEC,  # Cues, Tags, Void
        0x1043A770, 0x1941A469, 0xBF,  # Chapters, Attachments, CRC-32
        0x73C5, 0x83, 0x9C, 0x88, 0xB9, 0x55AA, 0x6DE7, 0x23314F, 0x22B59C, 0x22B59D, 0x56AA, 0x56BB,  # track
        0x55EE, 0x536E, 0x9F, 0xB5, 0x78B5, 0x6264, 0x7D7B, 0x23E383,  # track, audio
        0xE7, 0xA7, 0xAB, 0x9B, 0xFB, 0x75A1, 0x75A2, 0x5854,  # cluster and block group children
        _SEGMENT, _CLUSTER, _TRACKS, _TRACK_ENTRY, _BLOCK_GROUP, 0xE1,
        _SIMPLE_BLOCK, _BLOCK, _CODEC_PRIVATE, _TRACK_NUMBER, _CODEC_ID,
    }
)  # fmt: skip


class _Broken(Exception):
    pass


def _vint(data: bytearray, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at `at`: (value, length), None if not all here; _Broken if invalid."""
    if at >= len(data):
        return None
    first = data[at]
    if first == 0:
        raise _Broken("invalid EBML length")
    length = 9 - first.bit_length()
    if at + length > len(data):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    return value, length


_UNKNOWN_SIZES = frozenset((1 << (7 * n)) - 1 for n in range(1, 9))


class WebmDemuxer:
    """Opus packets of the first audio track of a live WebM stream (Segment and Clusters of unknown size)."""

    def __init__(self) -> None:
        self._buf = _Cursor()
        self._track: int | None = None
        self._entry_track: int | None = None
        self._head_sent = False
        self._started = False

    def feed(self, data: bytes) -> Iterator[Demuxed]:
        self._buf.data += data
        while True:
            try:
                item = self._next()
            except _Broken as exc:
                yield self._resync(str(exc))
                continue
            if item is None:
                if len(self._buf.data) > MAX_PENDING_BYTES:
                    yield self._resync("an element larger than any a recorder writes")
                    continue
                return
            if not isinstance(item, bool):
                yield item

    def _next(self) -> Demuxed | bool | None:
        """One element: a packet/head to hand out, True for one consumed silently, None when bytes are short."""
        data = self._buf.data
        if not self._started:
            if len(data) < 4:
                return None
            if not data.startswith(WEBM_MAGIC):
                raise _Broken("not a WebM stream (no EBML header)")
            self._started = True
        head = _vint(data, 0, keep_marker=True)
        if head is None:
            return None
        element, id_len = head
        if id_len > 4 or element not in _KNOWN_IDS:
            raise _Broken(f"unknown element 0x{element:X}")
        sized = _vint(data, id_len, keep_marker=False)
        if sized is None:
            return None
        size, size_len = sized
        header = id_len + size_len
        if element in _MASTERS:
            self._buf.drop(header)  # descend: its children follow (its size may be unknown)
            return True
        if size in _UNKNOWN_SIZES or size > MAX_ELEMENT_BYTES:
            raise _Broken(f"element 0x{element:X} of implausible size")
        if len(data) < header + size:
            return None
        payload = bytes(data[header : header + size])
        self._buf.drop(header + size)
        return self._element(element, payload)

    def _element(self, element: int, payload: bytes) -> Demuxed | bool:
        if element == _TRACK_NUMBER:
            self._entry_track = int.from_bytes(payload, "big")
        elif element == _CODEC_PRIVATE and self._track is None:
            head = parse_opus_head(payload)
            if head is not None:
                self._track = self._entry_track or 1
                self._head_sent = True
                return head
        elif element in (_SIMPLE_BLOCK, _BLOCK):
            return self._block(payload)
        return True

    def _block(self, payload: bytes) -> Demuxed | bool:
        track = _vint(bytearray(payload), 0, keep_marker=False)
        if track is None or len(payload) < track[1] + 3:
            raise _Broken("truncated block")
        if not self._head_sent or track[0] != self._track:
            return True  # another track, or blocks before a header we could use
        if payload[track[1] + 2] & 0x06:
            raise _Broken("laced blocks (a recorder writes one packet per block)")
        return payload[track[1] + 3 :]

    def _resync(self, reason: str) -> Corrupt:
        """Drop bytes up to the next cluster, or block of our track, that parses."""
        data = self._buf.data
        self._started = True
        at = 1
        while at < len(data):
            cluster = data.find(_CLUSTER_ID, at)
            block = data.find(b"\xa3", at)
            candidates = [c for c in (cluster, block) if c >= 0]
            if not candidates:
                at = len(data)
                break
            at = min(candidates)
            if at == cluster or self._plausible_block(at):
                break
            at += 1
        skipped = min(at, len(data))
        self._buf.drop(skipped)
        return Corrupt(reason, skipped)

    def _plausible_block(self, at: int) -> bool:
        data = self._buf.data
        try:
            sized = _vint(data, at + 1, keep_marker=False)
            if sized is None or not 4 <= sized[0] <= 2048:
                return False
            track = _vint(data, at + 1 + sized[1], keep_marker=False)
        except _Broken:
            return False
        flags_at = at + 1 + sized[1] + (track[1] if track else 0) + 2
        return (
            track is not None
            and track[0] == (self._track or 1)
            and flags_at < len(data)
            and data[flags_at] & 0x86 == 0x80  # a keyframe, no lacing: how a recorder writes audio
        )


# --- Ogg --------------------------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        r = byte << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(page: bytes | bytearray) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
    return crc


class OggDemuxer:
    """Opus packets of the first logical stream of an Ogg stream; pages with a bad CRC are dropped whole."""

    def __init__(self) -> None:
        self._buf = _Cursor()
        self._serial: int | None = None
        self._packet = bytearray()  # a packet continued across pages
        self._packets = 0

    def feed(self, data: bytes) -> Iterator[Demuxed]:
        self._buf.data += data
        while True:
            data_ = self._buf.data
            if len(data_) < 27:
                return
            if not data_.startswith(OGG_MAGIC):
                yield self._resync("not an Ogg page")
                continue
            segments = data_[26]
            header = 27 + segments
            if len(data_) < header:
                return
            lacing = data_[27:header]
            size = header + sum(lacing)
            if len(data_) < size:
                return
            page = bytearray(data_[:size])
            expected = struct.unpack_from("<I", page, 22)[0]
            page[22:26] = b"\0\0\0\0"
            if data_[4] != 0 or ogg_crc(page) != expected:
                self._packet.clear()
                yield self._resync("Ogg page with a bad checksum")
                continue
            self._buf.drop(size)
            serial = struct.unpack_from("<I", page, 14)[0]
            if self._serial is None:
                self._serial = serial
            if serial != self._serial:
                continue
            yield from self._page_packets(page, lacing, header, continued=bool(page[5] & 0x01))

    def _page_packets(self, page: bytearray, lacing: bytearray, at: int, *, continued: bool) -> Iterator[Demuxed]:
        if not continued:
            self._packet.clear()
        for value in lacing:
            self._packet += page[at : at + value]
            at += value
            if value < 255:
                packet, self._packet = bytes(self._packet), bytearray()
                self._packets += 1
                if self._packets == 1:
                    head = parse_opus_head(packet)
                    if head is None:
                        yield Corrupt("the first Ogg packet is not an OpusHead", 0)
                    else:
                        yield head
                elif self._packets > 2 and packet:  # the second is OpusTags
                    yield packet

    def _resync(self, reason: str) -> Corrupt:
        at = self._buf.data.find(OGG_MAGIC, 1)
        skipped = len(self._buf.data) - 3 if at < 0 else at  # keep a tail that may start the next "OggS"
        skipped = max(skipped, 1)
        self._buf.drop(skipped)
        return Corrupt(reason, skipped)
