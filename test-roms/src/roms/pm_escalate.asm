; pm_escalate: exceptions raised while delivering another event (32-bit protected mode, paging on).
;
; Ring-3 code raises an event whose delivery needs the ring-0 stack from the TSS, and that stack is
; made bad: SS0 a code segment (#TS), SS0 a not-present data segment (#SS), or ESP0 on a not-present
; page (#PF). The exception that results, or the #DF it escalates to, goes through a gate to a
; conforming ring-0 code segment, so its own delivery needs no stack switch (it runs at CPL 3 on the
; ring-3 stack) and can be observed; its handler records the vector, error code and pushed EIP,
; repairs the TSS and returns to ring 0 through the exit vector.
;
; Covers (SDM Vol. 3A 6.15 table 6-5, "Interrupt 8", "Interrupt 10", "Interrupt 12", "Interrupt 14";
; Vol. 2 INT n pseudocode for the new-stack checks):
;  * INT n from ring 3 with a bad SS0: #TS(SS0 selector), pushed EIP = the INT (a fault);
;  * INT n from ring 3 with SS0 not present: #SS(SS0 selector);
;  * INT n from ring 3 with ESP0 on a not-present page: #PF, error code 2 (supervisor write, not
;    present), CR2 = ESP0 - 4 (the first push);
;  * #GP (CLI at IOPL 0 in ring 3) whose delivery raises #PF: a contributory exception then a page
;    fault are handled serially: the #PF is delivered, not #DF;
;  * #GP whose delivery raises #TS (contributory then contributory): #DF with error code 0;
;  * #PF (ring 3 reads a not-present page) whose delivery raises #TS (page fault then contributory):
;    #DF with error code 0;
;  * INT n whose IDT gate lies on a not-present page: #PF (supervisor read, CR2 = the gate's address).
;
; QEMU quirk (-DQEMU_QUIRKS): QEMU 7.2 TCG raises #TS, not #SS, for a not-present SS0
; (target/i386/tcg/seg_helper.c do_interrupt_protected); the SDM's INT n pseudocode says #SS(SS
; selector + EXT). The handler for vector 10 is installed for that case too, so both are observed.
%include "common.inc"
%include "sys.inc"

PT0     equ 0x30000                     ; page table for 0-4 MiB
PD      equ 0x31000
HOLE    equ 0x5F000                     ; a not-present page
BADESP0 equ HOLE + 0x1000

SEL_CONF  equ SEL_FIRST                 ; conforming DPL0 code, flat
SEL_NPDAT equ SEL_FIRST + 8             ; DPL0 writable data, not present

C_N     equ 0x600
C_VEC   equ 0x604
C_ERR   equ 0x608
C_EIP   equ 0x60C

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        PM32_ENTER xgdt, xgdt_end, pm_main

xgdt:
        DESC 0, 0xFFFFF, 0x9F, 0xC      ; 0x40: conforming code, DPL0
        DESC 0, 0xFFFFF, 0x13, 0xC      ; 0x48: data, DPL0, not present
xgdt_end:

        bits 32
; Conforming handlers (CPL stays 3): every vector used here pushes an error code.
conf_8:  push dword 8
         jmp conf_common
conf_10: push dword 10
         jmp conf_common
conf_12: push dword 12
         jmp conf_common
conf_14: push dword 14
         jmp conf_common
conf_common:                            ; [esp] = vec, err, eip, cs, eflags
        inc dword [C_N]
        mov eax, [esp]
        mov [C_VEC], eax
        mov eax, [esp + 4]
        mov [C_ERR], eax
        mov eax, [esp + 8]
        mov [C_EIP], eax
        mov dword [TSS_ADDR + 4], RING0_STACK
        mov dword [TSS_ADDR + 8], SEL_DATA0
        int VEC_EXIT

; CONF vec, handler: the gate of vec goes to the conforming segment.
%macro CONF 2
        SET_GATE %1, %2, SEL_CONF, 0x8E00
%endmacro

; CASE ss0, esp0, ring3_code: arm the recovery, break the TSS, run ring3_code in ring 3 (IOPL 0).
%macro CASE 3
        mov dword [C_N], 0
        mov dword [C_VEC], -1
        mov dword [C_ERR], -1
        mov dword [C_EIP], -1
        TRY %%back
        mov dword [TSS_ADDR + 8], %1
        mov dword [TSS_ADDR + 4], %2
        RING3 %3, 0x2
%%back: ENDTRY
        mov dword [TSS_ADDR + 4], RING0_STACK
        mov dword [TSS_ADDR + 8], SEL_DATA0
%endmacro

; Ring-3 code: flat DPL3 data first (IRET to ring 3 nulled DS and ES), then the event.
%macro R3 2
%1:     mov ax, SEL_DATA3 | 3
        mov ds, ax
        mov es, ax
%1.ev:  %2
%endmacro
        R3 r3_int40, int 0x40
        R3 r3_cli, cli
        R3 r3_read_hole, {mov eax, [HOLE]}

pm_main:
        ; Paging: 4 KiB pages for 0-4 MiB (HOLE not present), 4 MiB pages above; all user, writable.
        mov edi, PT0
        mov eax, 0x7
        mov ecx, 1024
.pt:    mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop .pt
        mov dword [PT0 + (HOLE >> 12) * 4], 0
        mov dword [PD], PT0 | 7
        mov edi, PD + 4
        mov eax, 0x400000 | 0x87
        mov ecx, 1023
.pd:    mov [edi], eax
        add eax, 0x400000
        add edi, 4
        loop .pd
        mov eax, cr4
        or eax, 0x10                    ; PSE
        mov cr4, eax
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        SET_GATE 0x40, pm_stubs + 0x40 * 16, SEL_CODE0, 0xEE00      ; DPL3 gate to ring 0

        ; ------------------------------------------------ #TS during INT n
        CONF 10, conf_10
        CASE SEL_CODE0, RING0_STACK, r3_int40
        CHECK32 [C_N], 1, "INT n, SS0 a code segment: one exception"
        CHECK32 [C_VEC], 10, "INT n, SS0 a code segment: #TS"
        CHECK32 [C_ERR], SEL_CODE0, "INT n, SS0 a code segment: error code = SS0"
        CHECK32 [C_EIP], r3_int40.ev, "INT n, SS0 a code segment: pushed EIP = the INT"
        ; ------------------------------------------------ #SS during INT n
        CONF 12, conf_12
        CASE SEL_NPDAT, RING0_STACK, r3_int40
%ifndef QEMU_QUIRKS
        CHECK32 [C_VEC], 12, "INT n, SS0 not present: #SS"
%else
        CHECK32 [C_VEC], 10, "INT n, SS0 not present: #TS under QEMU"
%endif
        CHECK32 [C_ERR], SEL_NPDAT, "INT n, SS0 not present: error code = SS0"
        CHECK32 [C_EIP], r3_int40.ev, "INT n, SS0 not present: pushed EIP = the INT"
        ; ------------------------------------------------ #PF during INT n
        CONF 14, conf_14
        CASE SEL_DATA0, BADESP0, r3_int40
        CHECK32 [C_VEC], 14, "INT n, ESP0 not mapped: #PF"
        CHECK32 [C_ERR], 2, "INT n, ESP0 not mapped: supervisor write, not present"
        CHECK32 [C_EIP], r3_int40.ev, "INT n, ESP0 not mapped: pushed EIP = the INT"
        CHECK32 [EXC_CR2], BADESP0 - 4, "INT n, ESP0 not mapped: CR2 = the first push"
        ; ------------------------------------------------ #GP then #PF: serial
        CASE SEL_DATA0, BADESP0, r3_cli
        CHECK32 [C_N], 1, "#GP then #PF: one exception reaches a handler"
        CHECK32 [C_VEC], 14, "#GP then #PF: the #PF is delivered (no #DF)"
        CHECK32 [C_EIP], r3_cli.ev, "#GP then #PF: pushed EIP = the CLI"
        ; ------------------------------------------------ #GP then #TS: #DF
        RESTORE_GATE 10
        CONF 8, conf_8
        CASE SEL_CODE0, RING0_STACK, r3_cli
        CHECK32 [C_VEC], 8, "#GP then #TS: #DF"
        CHECK32 [C_ERR], 0, "#GP then #TS: #DF error code 0"
        ; ------------------------------------------------ #PF then #TS: #DF
        RESTORE_GATE 14
        CASE SEL_CODE0, RING0_STACK, r3_read_hole
        CHECK32 [C_VEC], 8, "#PF then #TS: #DF"
        CHECK32 [C_ERR], 0, "#PF then #TS: #DF error code 0"
        RESTORE_GATE 8
        RESTORE_GATE 12
        ; ------------------------------------------------ #PF reading the IDT gate
        ; A copy of the IDT whose vectors from 0x40 on lie on the not-present page: INT 0x40 in ring 0
        ; faults reading its gate (#PF, supervisor read, CR2 = the gate's address), delivered through
        ; vector 14's gate, which is mapped.
        mov esi, IDT_ADDR
        mov edi, HOLE - 0x200
        mov ecx, 0x200 / 4
        cld
        rep movsd
        sub esp, 8
        mov word [esp], 0x7FF
        mov dword [esp + 2], HOLE - 0x200
        lidt [esp]
        add esp, 8
        TRY .idtpf
        int 0x40
.idtpf: ENDTRY
        lidt [IDTR_RAM]
        CHECK32 [EXC_VEC], 14, "INT n whose gate is on a not-present page: #PF"
        CHECK32 [EXC_ERR], 0, "INT n whose gate is on a not-present page: supervisor read, not present"
        CHECK32 [EXC_CR2], HOLE, "INT n whose gate is on a not-present page: CR2 = the gate"
        jmp finish32

%include "reset.inc"
