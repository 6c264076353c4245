; Harness self-test: a ROM with a deliberately wrong expectation. Its test asserts that the harness
; reports the failure (exit status 3 and a FAIL line), proving a failing ROM cannot pass silently.
%include "common.inc"
rom_start:
        INIT16
        mov ax, 2
        add ax, 2
        CHECK16 eax, 5, "2+2 is deliberately expected to be 5"
        call finish16
%include "reset.inc"
