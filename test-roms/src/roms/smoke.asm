; Smallest ROM: real-mode checks of the reporting helpers themselves.
%include "common.inc"
rom_start:
        INIT16
        mov ax, 2
        add ax, 3
        CHECK16 eax, 5, "add ax"
        call finish16
%include "reset.inc"
