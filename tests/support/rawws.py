"""Raw websocket bytes for tests that must send what no well-behaved client would."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str = "/ws/echo/", host: str = "localhost", **headers: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(
    address: tuple[str, int], timeout: float = 5, rcvbuf: int | None = None
) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def response_head(sock: socket.socket) -> bytes:
    """Read an HTTP response head (or whatever arrives before the socket closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def exact_response_head(sock: socket.socket) -> bytes:
    """Read an HTTP response head and not one byte more (byte by byte), so that what
    the server sends after it (its first frames) stays in the socket."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data


def status_of(head: bytes) -> int | None:
    if not head.startswith(b"HTTP/1.1 "):
        return None
    return int(head.split(b" ", 2)[1])


def open_websocket(
    address: tuple[str, int], path: str = "/ws/echo/", rcvbuf: int | None = None
) -> socket.socket:
    sock = connect(address, rcvbuf=rcvbuf)
    sock.sendall(handshake(path))
    head = response_head(sock)
    assert status_of(head) == 101, head
    return sock


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, second = _read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(sock, 8))
    return first & 0x0F, _read_exact(sock, length)


def close_code(sock: socket.socket, timeout: float = 5) -> int | None:
    """Read frames until the server's close frame; its code (None if the socket just closed)."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    try:
        while time.monotonic() < deadline:
            opcode, payload = read_frame(sock)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    except (ConnectionError, TimeoutError, OSError):
        return None
    return None


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes the socket within ``timeout`` (reading and dropping data)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False
