"""Standalone espeak-ng worker process (stdlib + espeakng_loader only; run as a script, not imported).

Why a separate process that forks once per utterance: libespeak-ng keeps synthesis state in static
variables (glottal phase, flutter index, echo buffer, ...) that survive ``espeak_Terminate`` and
``espeak_Initialize``, so the same text and voice give different samples and even different lengths
depending on what was synthesised before. Forking a child from a process that has initialised espeak
but never synthesised gives every utterance the same starting state: the audio is a pure function of
(text, voice, rate, pitch, range, seed), independent of order, resumption or the number of workers.

Protocol (binary, on stdin / the protocol fd): each message is a 4-byte big-endian length followed by
that many bytes. Requests are JSON objects ``{"text", "voice", "rate", "volume", "pitch", "range", "seed"}`` or
``{"cmd": "quit"}``. A reply is a JSON header ``{"ok": true, "sample_rate", "num_samples", "events"}``
followed by a second message holding the int16 little-endian samples, or ``{"ok": false, "error"}``.
``events`` lists ``["phoneme", sample, mnemonic]`` and ``["word", sample, text_position, length]`` in
the order espeak emitted them; ``sample`` is espeak's own sample counter for the event (exact, at the
native rate), ``text_position`` is 1-based in characters.
"""

import ctypes
import json
import os
import struct
import sys

import espeakng_loader

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_PHONEME = 7
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _read_msg(fd: int) -> bytes:
    (n,) = struct.unpack(">I", _read_exact(fd, 4))
    return _read_exact(fd, n)


def _write_msg(fd: int, data: bytes) -> None:
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main() -> None:
    # The protocol gets its own copy of stdout; fd 1 then points at stderr so that anything the C
    # library prints cannot corrupt the stream.
    proto_out = os.dup(1)
    os.dup2(2, 1)
    proto_in = 0

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    data_path = espeakng_loader.get_data_path().encode()
    sample_rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT
    )
    if sample_rate <= 0:
        _write_msg(proto_out, json.dumps({"ok": False, "error": f"espeak_Initialize failed ({sample_rate})"}).encode())
        return

    chunks: list[bytes] = []
    events: list[list] = []

    @_CALLBACK
    def callback(wav, n, ev):  # noqa: ANN001
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != EVENT_LIST_TERMINATED:
            e = ev[i]
            if e.type == EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                events.append(["phoneme", int(e.sample), name])
            elif e.type == EVENT_WORD:
                events.append(["word", int(e.sample), int(e.text_position), int(e.length)])
            i += 1
        return 0

    lib.espeak_SetSynthCallback(callback)
    _write_msg(proto_out, json.dumps({"ok": True, "sample_rate": sample_rate}).encode())

    while True:
        try:
            req = json.loads(_read_msg(proto_in))
        except EOFError:
            return
        if req.get("cmd") == "quit":
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesise in the pristine state inherited from the parent
            os.close(r)
            code = 0
            try:
                lib.espeak_ng_SetRandSeed(int(req["seed"]))
                if lib.espeak_SetVoiceByName(req["voice"].encode()) != 0:
                    raise RuntimeError(f"espeak_SetVoiceByName({req['voice']!r}) failed")
                params = (
                    (PARAM_RATE, "rate"), (PARAM_VOLUME, "volume"), (PARAM_PITCH, "pitch"), (PARAM_RANGE, "range")
                )
                for param, key in params:
                    if lib.espeak_SetParameter(param, int(req[key]), 0) != 0:
                        raise RuntimeError(f"espeak_SetParameter({key}={req[key]}) failed")
                text = req["text"].encode("utf-8")
                status = lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
                if status != 0:
                    raise RuntimeError(f"espeak_Synth returned status {status}")
                audio = b"".join(chunks)
                header = {"ok": True, "sample_rate": sample_rate, "num_samples": len(audio) // 2, "events": events}
                _write_msg(w, json.dumps(header).encode())
                _write_msg(w, audio)
            except Exception as exc:  # reported to the caller with the request, never swallowed
                _write_msg(w, json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
                code = 1
            os.close(w)
            os._exit(code)
        os.close(w)
        try:
            header = _read_msg(r)
            ok = json.loads(header).get("ok", False)
            audio = _read_msg(r) if ok else None
        except EOFError:
            header, audio = None, None
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if header is None:
            msg = f"espeak child process died (wait status {status}) on {req!r}"
            header = json.dumps({"ok": False, "error": msg}).encode()
        _write_msg(proto_out, header)
        if audio is not None:
            _write_msg(proto_out, audio)


if __name__ == "__main__":
    sys.exit(main())
