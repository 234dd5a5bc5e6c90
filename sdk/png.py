"""A PNG writer that takes an image strip by strip, so that writing a large overlay or label map never holds the
whole image twice (PIL encodes from a complete image held in its own 4-bytes-per-pixel layout).

Standard PNG (8-bit palette or RGB, no interlacing): signature, IHDR, PLTE for palettes, IDAT chunks of one zlib
stream, IEND. RGB rows use the "Up" filter (difference to the row above), palette rows none; readers (PIL, OpenCV)
decode the same pixels as from PIL's own files.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_BYTES = 1 << 20  # compressed bytes per IDAT chunk


class PngWriter:
    """Write ``height`` rows of ``width`` pixels to an open binary file, in any number of ``write`` calls.

    Arguments:
        f: binary file object.
        width, height: image size in pixels.
        palette: (n, 3) uint8 colours for an 8-bit palette image (rows of indices); None for RGB rows.
        level: zlib compression level (PIL's default is 6).
    """

    def __init__(self, f, width: int, height: int, palette: np.ndarray | None = None, level: int = 6):
        self.f, self.width, self.height = f, int(width), int(height)
        self.channels = 1 if palette is not None else 3
        self.rows_written = 0
        self._z = zlib.compressobj(level)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._previous = np.zeros((self.width * self.channels,), np.uint8)  # the row above the first is zeros
        f.write(_SIGNATURE)
        colour_type = 3 if palette is not None else 2  # indexed, or RGB
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, colour_type, 0, 0, 0))
        if palette is not None:
            self._chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes())

    def write(self, rows: np.ndarray) -> None:
        """Append rows: (n, width) uint8 indices for a palette image, (n, width, 3) uint8 RGB otherwise."""
        rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(len(rows), self.width * self.channels)
        if self.rows_written + len(rows) > self.height:
            raise ValueError(f"PNG of {self.height} rows: {self.rows_written + len(rows)} written")
        out = np.empty((len(rows), rows.shape[1] + 1), np.uint8)
        if self.channels == 1:
            out[:, 0] = 0  # filter "None": palette indices do not predict each other
            out[:, 1:] = rows
        elif len(rows):
            out[:, 0] = 2  # filter "Up": each byte minus the byte above (mod 256)
            np.subtract(rows[0], self._previous, out=out[0, 1:])
            np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
            self._previous = rows[-1].copy()
        self.rows_written += len(rows)
        self._push(self._z.compress(out.tobytes()))

    def close(self) -> None:
        """Finish the zlib stream and the file (all ``height`` rows must have been written)."""
        if self.rows_written != self.height:
            raise ValueError(f"PNG of {self.height} rows: only {self.rows_written} written")
        self._push(self._z.flush(), final=True)
        self._chunk(b"IEND", b"")

    def _push(self, data: bytes, final: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= _IDAT_BYTES or (final and self._pending):
            self._chunk(b"IDAT", b"".join(self._pending))
            self._pending, self._pending_bytes = [], 0

    def _chunk(self, kind: bytes, data: bytes) -> None:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        self.f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))
