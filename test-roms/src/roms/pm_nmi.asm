; pm_nmi: NMI delivery and blocking, and 286 (16-bit) gates, in 32-bit protected mode.
;
; Covers:
;  * A self-NMI sent through the local APIC's ICR (delivery mode NMI, physical destination = this
;    APIC's ID) arrives through vector 2 right after the ICR write. A second self-NMI sent inside the
;    NMI handler is held (NMIs are blocked from the delivery of an NMI until the next IRET: SDM Vol. 3A
;    6.7.1) and arrives right after the handler's IRET, at the same interrupted instruction, never
;    nested. An IRET from another handler (INT 0x41 called inside the NMI handler) also ends the
;    blocking: the held NMI then nests inside the first handler.
;  * 286 gates (SDM Vol. 3A 6.11, 5.8.3: 16-bit gates have a 16-bit offset): a 16-bit interrupt gate,
;    a 16-bit trap gate and a 16-bit call gate whose high offset word (bytes 6-7) holds garbage reach
;    the handler at the low word's offset, with a 16-bit frame; the interrupt gate clears IF, the trap
;    gate keeps it.
; QEMU quirks (-DQEMU_QUIRKS): QEMU 7.2 TCG takes an NMI only at the end of a translation block, a few
; instructions after the ICR write (the pushed-EIP checks are skipped; the SDM recognises it at the
; next instruction boundary), and jumps to the full 32-bit offset of a 16-bit interrupt, trap or call
; gate (under QEMU the gates' high words are 0; 6.11 and 5.8.3: a 16-bit gate's offset is 16 bits).
%include "common.inc"
%include "sys.inc"

LAPIC       equ 0xFEE00000
NMI_N       equ 0x600
NMI_DEPTH   equ 0x604
NMI_MAXD    equ 0x608
NMI_MODE    equ 0x60C
NMI_SEEN_IN equ 0x610
NMI_AFTER   equ 0x614
NMI_EIP     equ 0x620               ; pushed EIP of the first four NMIs
G_N         equ 0x640
G_FLAGS     equ 0x644
G_SP        equ 0x648
G_IP        equ 0x64C
T_N1        equ 0x650
T_SP1       equ 0x654
T_HSP1      equ 0x658
T_IP1       equ 0x65C
T_FL1       equ 0x660
T_N2        equ 0x664
T_FL2       equ 0x668
T_N3        equ 0x66C
T_SP3       equ 0x670
T_HSP3      equ 0x674

SEL_CG16    equ SEL_FIRST           ; 16-bit call gate
SEL_CG16_T  equ SEL_FIRST + 8       ; 16-bit code segment for the 286 handlers (base 0xF0000)

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        PM32_ENTER xgdt, xgdt_end, pm_main

xgdt:
        ; 0x40: 286 call gate to SEL_CG16_T:gate16_call, offset bytes 6-7 = 0xDEAD (ignored)
        dw R(gate16_call)
        dw SEL_CG16_T
        db 0, 0x84
%ifndef QEMU_QUIRKS
        dw 0xDEAD
%else
        dw 0
%endif
        DESC 0xF0000, 0xFFFF, 0x9B, 0x0         ; 0x48: 16-bit code, base 0xF0000
xgdt_end:

; ---------------------------------------------------------------- 16-bit handlers (in SEL_CG16_T)
        bits 16
gate16_int:
        inc dword [G_N]
        mov [G_SP], esp
        pushf
        pop ax
        mov [G_FLAGS], ax
        mov ebp, esp
        mov ax, [ebp]                   ; pushed IP (16-bit frame)
        mov [G_IP], ax
        iret                            ; 16-bit IRET
gate16_call:
        inc dword [G_N]
        mov [G_SP], esp
        retf                            ; 16-bit far return

        bits 32
send_self_nmi:
        push eax
        mov eax, [LAPIC + 0x20]         ; this APIC's ID in bits 31:24
        and eax, 0xFF000000
        mov [LAPIC + 0x310], eax
        mov dword [LAPIC + 0x300], 0x4400   ; NMI, physical, assert
.sent:  pop eax
        ret

nmi_handler:
        push eax
        inc dword [NMI_DEPTH]
        mov eax, [NMI_DEPTH]
        cmp eax, [NMI_MAXD]
        jbe .d
        mov [NMI_MAXD], eax
.d:     inc dword [NMI_N]
        mov eax, [NMI_N]
        cmp eax, 4
        ja .nolog
        push ebx
        mov ebx, [esp + 8]              ; pushed EIP
        mov [NMI_EIP + eax * 4 - 4], ebx
        pop ebx
.nolog: cmp dword [NMI_N], 1
        jne .out
        call send_self_nmi              ; held: NMIs are blocked until IRET
        nop
        nop
        mov eax, [NMI_N]
        mov [NMI_SEEN_IN], eax
        cmp dword [NMI_MODE], 1
        jne .out
        int 0x41                        ; its IRET ends the blocking
        mov eax, [NMI_N]
        mov [NMI_AFTER], eax
.out:   dec dword [NMI_DEPTH]
        pop eax
        iretd

int41_handler:
        iretd

%macro NMI_RESET 1
        xor eax, eax
        mov [NMI_N], eax
        mov [NMI_DEPTH], eax
        mov [NMI_MAXD], eax
        mov [NMI_SEEN_IN], eax
        mov [NMI_AFTER], eax
        mov dword [NMI_MODE], %1
%endmacro

pm_main:
        SET_GATE 2, nmi_handler, SEL_CODE0, 0x8E00
        SET_GATE 0x41, int41_handler, SEL_CODE0, 0x8E00
        mov dword [LAPIC + 0xF0], 0x1FF         ; software-enable the local APIC

        ; ------------------------------------------------ NMI, blocked until IRET
        NMI_RESET 0
        call send_self_nmi
        CHECK32 [NMI_N], 2, "self-NMI: two NMIs in all"
        CHECK32 [NMI_MAXD], 1, "self-NMI: the second never nests"
        CHECK32 [NMI_SEEN_IN], 1, "self-NMI: the second is held inside the handler"
%ifndef QEMU_QUIRKS
        CHECK32 [NMI_EIP], send_self_nmi.sent, "self-NMI: arrives right after the ICR write"
        CHECK32 [NMI_EIP + 4], send_self_nmi.sent, "self-NMI: the held one arrives right after IRET"
%endif
        mov eax, [NMI_EIP]
        CHECK32 [NMI_EIP + 4], eax, "self-NMI: the held one arrives at the instruction IRET returns to"

        ; ------------------------------------------------ any IRET ends the blocking
        NMI_RESET 1
        call send_self_nmi
        CHECK32 [NMI_N], 2, "NMI + INT: two NMIs in all"
        CHECK32 [NMI_SEEN_IN], 1, "NMI + INT: held until an IRET"
        CHECK32 [NMI_AFTER], 2, "NMI + INT: the INT handler's IRET lets it in"
        CHECK32 [NMI_MAXD], 2, "NMI + INT: it nests in the first handler"

        ; ------------------------------------------------ 286 gates
        ; (run from 16-bit code in SEL_CG16_T: a 16-bit gate pushes and returns to a 16-bit IP)
        mov word [IDT_ADDR + 0x42 * 8], R(gate16_int)
        mov word [IDT_ADDR + 0x42 * 8 + 2], SEL_CG16_T
        mov word [IDT_ADDR + 0x42 * 8 + 4], 0x8600          ; 16-bit interrupt gate
%ifndef QEMU_QUIRKS
        mov word [IDT_ADDR + 0x42 * 8 + 6], 0xBEEF          ; offset 31:16: ignored
%else
        mov word [IDT_ADDR + 0x42 * 8 + 6], 0
%endif
        call SEL_CG16_T:R(gate16_tests)
        RESTORE_GATE 0x42
        CHECK32 [T_N1], 1, "286 interrupt gate: handler at the low offset word"
        mov eax, [T_SP1]
        sub eax, 6
        CHECK32 [T_HSP1], eax, "286 interrupt gate: 16-bit frame (6 bytes)"
        CHECK32 [T_IP1], R(gate16_tests.i1), "286 interrupt gate: pushed IP"
        mov eax, [T_FL1]
        and eax, FL_IF
        CHECK32 eax, 0, "286 interrupt gate clears IF"
        CHECK32 [T_N2], 1, "286 trap gate: handler at the low offset word"
        mov eax, [T_FL2]
        and eax, FL_IF
        CHECK32 eax, FL_IF, "286 trap gate keeps IF"
        CHECK32 [T_N3], 1, "286 call gate: handler at the low offset word"
        mov eax, [T_SP3]
        sub eax, 4
        CHECK32 [T_HSP3], eax, "286 call gate: 16-bit return address (4 bytes)"
        jmp finish32

        bits 16
; In SEL_CG16_T (16-bit code, base 0xF0000), flat 32-bit SS: records the results for the 32-bit part.
gate16_tests:
        mov dword [G_N], 0
        mov [T_SP1], esp
        sti
        int 0x42
.i1:    cli
        mov eax, [G_N]
        mov [T_N1], eax
        mov eax, [G_SP]
        mov [T_HSP1], eax
        movzx eax, word [G_IP]
        mov [T_IP1], eax
        movzx eax, word [G_FLAGS]
        mov [T_FL1], eax
        mov dword [G_N], 0
        mov word [IDT_ADDR + 0x42 * 8 + 4], 0x8700          ; 16-bit trap gate
        sti
        int 0x42
        cli
        mov eax, [G_N]
        mov [T_N2], eax
        movzx eax, word [G_FLAGS]
        mov [T_FL2], eax
        mov dword [G_N], 0
        mov [T_SP3], esp
        call SEL_CG16:0                 ; 16-bit far call through the 286 call gate
        mov eax, [G_N]
        mov [T_N3], eax
        mov eax, [G_SP]
        mov [T_HSP3], eax
        o32 retf

        bits 32
%include "reset.inc"
