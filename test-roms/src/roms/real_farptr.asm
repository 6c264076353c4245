; real_farptr: the far-pointer loads in real mode, as BIOSes and boot loaders use them.
;
; LDS/LES/LSS/LFS/LGS with 16-bit (m16:16) and 32-bit (66 prefix, m16:32) operand size: the register
; gets the offset (16-bit: upper half kept; 32-bit: all of it), the segment register the selector and
; base selector*16 (checked by reading through it), memory operands with every default segment and an
; override, and LSS reloading SS:SP as one instruction (a push after it lands at the new SS:SP).
;
; Expectations from the Intel SDM Vol. 2 "LDS/LES/LFS/LGS/LSS—Load Far Pointer" (Operation: offset
; then selector, operand size picks m16:16 or m16:32; real-address mode loads the selector and base
; only) and Vol. 3A 20.1.1 (real-mode address translation).
%include "common.inc"

PTRS    equ 0x800               ; far pointers in RAM (segment 0)
MARK    equ 0x9000              ; linear 0x9000: a word read through the loaded segments

; CHECKW reg16, expected, "name": zero-extends the register into EAX and checks it (clobbers EAX).
%macro CHECKW 3
        movzx eax, %1
        CHECK16 eax, %2, %3
%endmacro

rom_start:
        INIT16
        xor ax, ax
        mov es, ax
        ; Pointers: 16-bit 0x0900:0x0010 at PTRS, 32-bit 0x0800:0x12345678 at PTRS+8.
        mov word [es:PTRS], 0x0010
        mov word [es:PTRS + 2], 0x0900
        mov dword [es:PTRS + 8], 0x12345678
        mov word [es:PTRS + 12], 0x0800
        ; Marker at linear 0x9010 = 0x0900:0x0010.
        mov word [es:MARK + 0x10], 0xBEEF

        ; ---- LDS r16, m16:16 (through ES: override, since DS will change)
        mov esi, 0xAAAA5555
        lds si, [es:PTRS]
        mov ax, ds
        CHECKW ax, 0x0900, "lds ds"
        CHECK16 esi, 0xAAAA0010, "lds si keeps upper half"
        mov ax, [si]
        CHECKW ax, 0xBEEF, "lds base = selector*16"
        mov ax, 0xF000
        mov ds, ax

        ; ---- LES r16 (DS-relative via segment 0: use SS, which is 0)
        mov di, 0x7777
        les di, [ss:PTRS]
        mov ax, es
        CHECKW ax, 0x0900, "les es"
        CHECKW di, 0x0010, "les di"
        mov ax, [es:di]
        CHECKW ax, 0xBEEF, "les base"

        ; ---- LFS/LGS r32, m16:32
        xor bx, bx
        mov ebx, 0xFFFFFFFF
        lfs ebx, [ss:PTRS + 8]
        mov ax, fs
        CHECKW ax, 0x0800, "lfs fs"
        CHECK16 ebx, 0x12345678, "lfs ebx = 32-bit offset"
        mov ecx, 0
        lgs ecx, [ss:PTRS + 8]
        mov ax, gs
        CHECKW ax, 0x0800, "lgs gs"
        CHECK16 ecx, 0x12345678, "lgs ecx"
        mov ax, [gs:0x1010]             ; 0x0800*16 + 0x1010 = 0x9010
        CHECKW ax, 0xBEEF, "lgs base"
        ; 16-bit LFS from a BP-based operand (default segment SS).
        mov bp, PTRS
        mov dx, 0
        lfs dx, [bp]
        mov ax, fs
        CHECKW ax, 0x0900, "lfs [bp] uses ss"
        CHECKW dx, 0x0010, "lfs dx"

        ; ---- LSS: SS:SP in one instruction; a push goes to the new stack.
        mov word [ss:PTRS + 16], 0x0200        ; SP = 0x0200
        mov word [ss:PTRS + 18], 0x0050        ; SS = 0x0050 -> stack top at linear 0x0700
        mov bx, sp
        lss sp, [ss:PTRS + 16]
        push word 0x1234
        mov ax, ss
        mov cx, sp
        lss sp, [cs:R(old_stack)]              ; back to 0000:STACK16
        CHECKW ax, 0x0050, "lss ss"
        CHECKW cx, 0x01FE, "lss sp, push"
        xor ax, ax
        mov es, ax
        mov ax, [es:0x06FE]
        CHECKW ax, 0x1234, "push landed at new ss:sp"
        CHECKW sp, STACK16, "lss restores the stack"

        call finish16

old_stack:
        dw STACK16, 0

%include "reset.inc"
