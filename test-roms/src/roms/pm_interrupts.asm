; pm_interrupts: exceptions and software interrupts in real mode (IVT) and 32-bit protected mode (IDT).
;
; Real mode: INT n through the IVT (pushed FLAGS/CS/IP, IF cleared inside, IRET restores), the IVT's
; segment:offset used as given, LIDT relocating the real-mode IVT, INT3/INTO (traps: IP after),
; #UD/#BR/#DE (faults: IP of the instruction).
; Protected mode: interrupt gate (IF cleared) vs trap gate (IF kept), exact frame without error code
; (ESP-12) and with error code (ESP-16), a 16-bit interrupt gate (16-bit frame, ESP-6), INT3/INT 3/
; INTO traps (EIP after), #UD/#DE/#BR faults (EIP at the instruction), IRET restoring EFLAGS.IF;
; INT n errors: vector beyond the IDT limit #GP(n*8+2), not-present gate #NP(n*8+2), invalid gate type
; #GP(n*8+2), gate to a data segment #GP(sel), gate to a not-present code segment #NP(sel); from ring 3:
; INT n / INT3 / INTO to a DPL0 gate #GP(n*8+2) while a hardware exception (#UD) ignores the gate DPL;
; double fault: #GP whose gate is not present (#NP during #GP delivery) and #DE whose gate is not
; present, both -> #DF with error code 0; a benign exception (#UD) whose gate is not present gives a
; plain #NP with error 6*8+2+EXT(1). QEMU TCG leaves EXT clear, against SDM Vol. 3A 6.13; assembling
; with -DQEMU_QUIRKS stops comparing that bit.
;
; Expectations from the Intel SDM Vol. 3A 6.4 (sources), 6.5 (exception classes: faults vs traps,
; saved EIP), 6.10-6.12 (IDT, gate descriptors, stack frames Figure 6-4, IF for interrupt vs trap
; gates), 6.12.1.1 (INT n/INT3/INTO check the gate DPL against CPL; hardware exceptions don't),
; 6.13 (error code: EXT, IDT bit=bit1, index), 6.15 "Interrupt 8—Double Fault" (Table 6-5
; contributory pairs; error code 0; saved CS:EIP undefined), "#NP", "#GP"; Vol. 3A 20.1.4 (real-mode
; interrupt handling, IVT via IDTR base); Vol. 2 "INT n/INTO/INT3/INT1", "IRET", "BOUND".
%include "common.inc"
%include "sys.inc"

S_CNP   equ 0x40                        ; code segment, not present

H_ESP    equ 0x600                      ; handler records
H_EIP    equ 0x604
H_CS     equ 0x608
H_EFL    equ 0x60C
H_INFL   equ 0x610
H_ERR    equ 0x614
H_RESUME equ 0x618
ESP_BEFORE equ 0x61C
BOUNDS   equ 0x620                      ; two words / two dwords

xgdt:
        DESC 0, 0xFFFFF, 0x1B, 0xC      ; 0x40 code, P=0
xgdt_end:

        bits 16
; real-mode INT handler: record the frame and the flags inside, then IRET
rm_hint:
        push bp
        mov bp, sp
        push ax
        mov ax, [bp + 2]
        mov [ss:H_EIP], ax
        mov ax, [bp + 4]
        mov [ss:H_CS], ax
        mov ax, [bp + 6]
        mov [ss:H_EFL], ax
        lea ax, [bp + 2]
        mov [ss:H_ESP], ax
        pushf
        pop ax
        mov [ss:H_INFL], ax
        pop ax
        pop bp
        iret
rm_hint_b:                              ; second handler: marks H_ERR
        mov word [ss:H_ERR], 0xB0B0
        iret
rm_hcs:                                 ; reached as F100:(offset-0x1000): records CS
        push ax
        mov ax, cs
        mov [ss:H_CS], ax
        pop ax
        iret

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        mov al, 0xFF                    ; mask the PICs: we run with IF=1 in places
        out 0x21, al
        out 0xA1, al
        xor ax, ax
        mov ds, ax
        mov es, ax
        xor eax, eax
        mov cx, 16
        mov di, H_ESP
        rep stosd

; ------------------------------------------------------------ real mode: INT n through the IVT
        RM_SETVEC 0x40, rm_hint
        mov ax, sp
        sub ax, 6
        mov [ESP_BEFORE], ax
        push word FL_CF | FL_IF | 2
        popf
        int 0x40
.rm_after:
        pushf
        pop ax
        cli
        and eax, 0xFFFF
        and ax, FL_IF | FL_CF
        CHECK16 eax, FL_IF | FL_CF, "rm int: iret restores IF/CF"
        CHECK16 dword [H_EIP], R(.rm_after), "rm int: pushed ip"
        CHECK16 dword [H_CS], 0xF000, "rm int: pushed cs"
        mov eax, [H_EFL]
        and eax, FL_IF | FL_CF
        CHECK16 eax, FL_IF | FL_CF, "rm int: pushed flags"
        mov eax, [H_INFL]
        and eax, FL_IF | FL_TF
        CHECK16 eax, 0, "rm int: IF/TF clear in handler"
        CHECK16 dword [H_ESP], [ESP_BEFORE], "rm int: sp-6"
        mov word [0x41 * 4], R(rm_hcs) - 0x1000
        mov word [0x41 * 4 + 2], 0xF100
        int 0x41
        CHECK16 dword [H_CS], 0xF100, "rm int: ivt segment used"
        ; LIDT moves the real-mode IVT
        mov word [0x8000 + 0x40 * 4], R(rm_hint_b)
        mov word [0x8000 + 0x40 * 4 + 2], 0xF000
        mov word [SCRATCH], 0x3FF
        mov dword [SCRATCH + 2], 0x8000
        o32 lidt [SCRATCH]
        mov word [H_ERR], 0
        int 0x40
        mov word [SCRATCH + 2], 0
        o32 lidt [SCRATCH]
        CHECK16 dword [H_ERR], 0xB0B0, "rm lidt relocates ivt"

; ------------------------------------------------------------ real mode exceptions
        RM_TRY .r1
        int3
.r1a:
.r1:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 3, "rm int3 vector"
        CHECK16 dword [ss:RM_IP], R(.r1a), "rm int3 ip after"
        RM_TRY .r2
        push word FL_OF | 2
        popf
        into
.r2a:
.r2:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 4, "rm into OF=1 vector"
        CHECK16 dword [ss:RM_IP], R(.r2a), "rm into ip after"
        RM_TRY .r3
        push word 2
        popf
        into
.r3:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], -1, "rm into OF=0 no trap"
        RM_TRY .r4
.r4f:   ud2
.r4:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 6, "rm ud2 vector"
        CHECK16 dword [ss:RM_IP], R(.r4f), "rm ud2 ip"
        mov word [BOUNDS], 0
        mov word [BOUNDS + 2], 10
        mov ax, 11
        RM_TRY .r5
.r5f:   bound ax, [BOUNDS]
.r5:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 5, "rm bound out of range vector"
        CHECK16 dword [ss:RM_IP], R(.r5f), "rm bound ip"
        mov ax, 10
        RM_TRY .r6
        bound ax, [BOUNDS]
.r6:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], -1, "rm bound in range"
        xor bx, bx
        RM_TRY .r7
.r7f:   div bx
.r7:    RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 0, "rm #DE vector"
        CHECK16 dword [ss:RM_IP], R(.r7f), "rm #DE ip"
        mov eax, [ss:RM_FLAGS]
        and eax, FL_IF
        CHECK16 eax, 0, "rm #DE pushed flags"

        PM32_ENTER xgdt, xgdt_end, pm_main

        bits 32
; handler for INT 0x40/0x41: records frame (no error code) and EFLAGS inside; IRET
pm_hint:
        mov [H_ESP], esp
        push eax
        mov eax, [esp + 4]
        mov [H_EIP], eax
        mov eax, [esp + 8]
        mov [H_CS], eax
        mov eax, [esp + 12]
        mov [H_EFL], eax
        pushfd
        pop eax
        mov [H_INFL], eax
        pop eax
        iretd
; handler for an exception with error code: records, resumes at [H_RESUME]
pm_herr:
        mov [H_ESP], esp
        push eax
        mov eax, [esp + 4]
        mov [H_ERR], eax
        mov eax, [esp + 8]
        mov [H_EIP], eax
        mov eax, [esp + 12]
        mov [H_CS], eax
        mov eax, [esp + 16]
        mov [H_EFL], eax
        mov eax, [H_RESUME]
        mov [esp + 8], eax
        pop eax
        add esp, 4
        iretd
; handler for an exception without error code: records, resumes at [H_RESUME]
pm_hnoerr:
        mov [H_ESP], esp
        push eax
        mov eax, [esp + 4]
        mov [H_EIP], eax
        mov eax, [esp + 8]
        mov [H_CS], eax
        mov eax, [esp + 12]
        mov [H_EFL], eax
        mov eax, [H_RESUME]
        mov [esp + 4], eax
        pop eax
        iretd
; handler behind a 16-bit interrupt gate (286 gate: 16-bit offset, so it lives in the 16-bit code
; segment based at 0xF0000): 16-bit frame on the flat 32-bit stack; records it, drops it, goes back.
        bits 16
pm_h16:
        mov [H_ESP], esp
        movzx eax, word [esp]
        mov [H_EIP], eax
        movzx eax, word [esp + 2]
        mov [H_CS], eax
        movzx eax, word [esp + 4]
        mov [H_EFL], eax
        add esp, 6
        jmp dword SEL_CODE0:pm_h16_back
        bits 32
pm_h16_back:
        jmp [H_RESUME]

%macro FAULT 4
        TRY %%r
%%f:    %1
%%r:    ENDTRY
        EXPECT_EXC %2, %3, %%f, %4
%endmacro
; TRAP {insn}, vec, "name": trap -> EIP after the instruction
%macro TRAP 3
        TRY %%r
        %1
%%a:
%%r:    ENDTRY
        CHECK32 [EXC_VEC], %2, {%3, " vector"}
        CHECK32 [EXC_EIP], %%a, {%3, " eip after"}
%endmacro

pm_main:
; ------------------------------------------------------------ interrupt vs trap gate, frame
        SET_GATE 0x40, pm_hint, SEL_CODE0, 0x8E00
        SET_GATE 0x41, pm_hint, SEL_CODE0, 0x8F00
        lea eax, [esp - 12]
        mov [ESP_BEFORE], eax
        push dword FL_IF | FL_CF | 2
        popfd
        int 0x40
.i40:   pushfd
        pop eax
        cli
        and eax, FL_IF | FL_CF
        CHECK32 eax, FL_IF | FL_CF, "int gate: iret restores IF"
        CHECK32 [H_EIP], .i40, "int gate: pushed eip"
        CHECK32 [H_CS], SEL_CODE0, "int gate: pushed cs"
        mov eax, [H_EFL]
        and eax, FL_IF | FL_CF
        CHECK32 eax, FL_IF | FL_CF, "int gate: pushed eflags"
        mov eax, [H_INFL]
        and eax, FL_IF
        CHECK32 eax, 0, "int gate: IF cleared"
        CHECK32 [H_ESP], [ESP_BEFORE], "int gate: esp-12 (no error code)"
        push dword FL_IF | 2
        popfd
        int 0x41
        cli
        mov eax, [H_INFL]
        and eax, FL_IF
        CHECK32 eax, FL_IF, "trap gate: IF kept"
        mov dword [H_INFL], 0
        push dword 2
        popfd
        int 0x41
        mov eax, [H_INFL]
        and eax, FL_IF
        CHECK32 eax, 0, "trap gate: IF stays 0"

        ; error-code frame: #GP(sel) from mov ss
        SET_GATE 13, pm_herr, SEL_CODE0, 0x8E00
        mov dword [H_RESUME], .gp_res
        lea eax, [esp - 16]
        mov [ESP_BEFORE], eax
        mov ax, SEL_CODE0
.gp_f:  mov ss, ax
.gp_res:
        CHECK32 [H_ESP], [ESP_BEFORE], "#GP frame: esp-16 (error code)"
        CHECK32 [H_ERR], SEL_CODE0, "#GP frame: error code"
        CHECK32 [H_EIP], .gp_f, "#GP frame: eip"
        CHECK32 [H_CS], SEL_CODE0, "#GP frame: cs"
        RESTORE_GATE 13
        SET_GATE 6, pm_hnoerr, SEL_CODE0, 0x8E00
        mov dword [H_RESUME], .ud_res
        lea eax, [esp - 12]
        mov [ESP_BEFORE], eax
.ud_f:  ud2
.ud_res:
        CHECK32 [H_ESP], [ESP_BEFORE], "#UD frame: esp-12"
        CHECK32 [H_EIP], .ud_f, "#UD frame: eip"
        RESTORE_GATE 6
        SET_GATE 0x42, R(pm_h16), SEL_CODE16, 0x8600
        mov dword [H_RESUME], .g16_res
        lea eax, [esp - 6]
        mov [ESP_BEFORE], eax
        int 0x42
.g16_a:
.g16_res:
        CHECK32 [H_ESP], [ESP_BEFORE], "16-bit gate: esp-6"
        CHECK32 [H_EIP], (.g16_a - $$) & 0xFFFF, "16-bit gate: pushed ip (low 16)"
        CHECK32 [H_CS], SEL_CODE0, "16-bit gate: pushed cs"

; ------------------------------------------------------------ traps and faults
        TRAP {int3}, 3, "int3"
        TRAP {int 3}, 3, "int 3 (CD 03)"
        push dword FL_OF | 2
        popfd
        TRAP {into}, 4, "into OF=1"
        TRY .no4
        push dword 2
        popfd
        into
.no4:   ENDTRY
        EXPECT_NOEXC "into OF=0"
        FAULT {ud2}, 6, 0, "#UD ud2"
        FAULT {db 0xF0, 0x90}, 6, 0, "#UD lock nop"
        xor ecx, ecx
        FAULT {div ecx}, 0, 0, "#DE div"
        mov dword [BOUNDS], -5
        mov dword [BOUNDS + 4], 5
        mov eax, -6
        FAULT {bound eax, [BOUNDS]}, 5, 0, "#BR bound below"
        mov eax, 5
        TRY .b_ok
        bound eax, [BOUNDS]
.b_ok:  ENDTRY
        EXPECT_NOEXC "bound in range"

; ------------------------------------------------------------ INT n delivery errors
        mov word [IDTR_RAM], 0x48 * 8 - 1       ; vectors 0..0x47
        lidt [IDTR_RAM]
        FAULT {int 0x50}, 13, 0x50 * 8 + 2, "int beyond idt limit"
        FAULT {int 0x48}, 13, 0x48 * 8 + 2, "int just beyond idt limit"
        mov word [IDTR_RAM], 256 * 8 - 1
        lidt [IDTR_RAM]
        and byte [IDT_ADDR + 0x43 * 8 + 5], 0x7F
        FAULT {int 0x43}, 11, 0x43 * 8 + 2, "int to not-present gate"
        RESTORE_GATE 0x43
        SET_GATE 0x44, pm_hint, SEL_CODE0, 0x8C00
        FAULT {int 0x44}, 13, 0x44 * 8 + 2, "int to call-gate type in idt"
        RESTORE_GATE 0x44
        SET_GATE 0x45, pm_hint, S_CNP, 0x8E00
        FAULT {int 0x45}, 11, S_CNP, "gate to not-present code segment"
        SET_GATE 0x46, pm_hint, SEL_DATA0, 0x8E00
        FAULT {int 0x46}, 13, SEL_DATA0, "gate to data segment"
        RESTORE_GATE 0x45
        RESTORE_GATE 0x46

; ------------------------------------------------------------ gate DPL vs CPL (ring 3)
%macro R3FAULT 4 ; {insn}, vec, err, name: run insn in ring 3
        TRY %%r
        RING3 %%r3, 0x2
%%r3:
%%f:    %1
        int VEC_EXIT
%%r:    ENDTRY
        EXPECT_EXC %2, %3, %%f, %4
%endmacro
        R3FAULT {int 0x47}, 13, 0x47 * 8 + 2, "ring3 int n to dpl0 gate"
        R3FAULT {int3}, 13, 3 * 8 + 2, "ring3 int3 to dpl0 gate"
        R3FAULT {db 0xCD, 0x03}, 13, 3 * 8 + 2, "ring3 int 3 to dpl0 gate"
        R3FAULT {ud2}, 6, 0, "ring3 #UD ignores gate dpl"
        mov byte [IDT_ADDR + 3 * 8 + 5], 0xEE   ; vector 3 DPL3
        TRY .bp3
        RING3 .bp3r, 0x2
.bp3r:  int3
.bp3a:  int VEC_EXIT
.bp3:   ENDTRY
        CHECK32 [EXC_VEC], 3, "ring3 int3 to dpl3 gate vector"
        CHECK32 [EXC_EIP], .bp3a, "ring3 int3 to dpl3 gate eip"
        CHECK32 [EXC_CS], SEL_CODE3 | 3, "ring3 int3 pushed cs"
        CHECK32 [EXC_SS], SEL_DATA3 | 3, "ring3 int3 pushed ss"
        CHECK32 [EXC_ESP], RING3_STACK, "ring3 int3 pushed esp"
        RESTORE_GATE 3
        TRY .of3
        RING3 .of3r, FL_OF | 2
.of3r:
.of3f:  into
        int VEC_EXIT
.of3:   ENDTRY
        EXPECT_EXC 13, 4 * 8 + 2, .of3f, "ring3 into to dpl0 gate"

; ------------------------------------------------------------ double fault
        and byte [IDT_ADDR + 13 * 8 + 5], 0x7F  ; #GP gate not present
        xor eax, eax
        TRY .df1
        mov ss, ax                              ; #GP(0) -> #NP(gate 13) -> #DF
.df1:   ENDTRY
        RESTORE_GATE 13
        CHECK32 [EXC_VEC], 8, "#GP with not-present gate -> #DF vector"
        CHECK32 [EXC_ERR], 0, "#GP with not-present gate -> #DF error code"
        and byte [IDT_ADDR + 0 * 8 + 5], 0x7F   ; #DE gate not present
        xor ecx, ecx
        TRY .df2
        div ecx                                 ; #DE -> #NP(gate 0) -> #DF
.df2:   ENDTRY
        RESTORE_GATE 0
        CHECK32 [EXC_VEC], 8, "#DE with not-present gate -> #DF vector"
        CHECK32 [EXC_ERR], 0, "#DE with not-present gate -> #DF error code"
        and byte [IDT_ADDR + 6 * 8 + 5], 0x7F   ; #UD gate not present: benign + contributory, no #DF
        TRY .np6
.np6f:  ud2
.np6:   ENDTRY
        RESTORE_GATE 6
        CHECK32 [EXC_VEC], 11, "#UD with not-present gate -> #NP vector"
%ifdef QEMU_QUIRKS
        mov eax, [EXC_ERR]                      ; QEMU leaves EXT clear (SDM Vol. 3A 6.13 sets it)
        and eax, 0xFFFE
        CHECK32 eax, 6 * 8 + 2, "#UD with not-present gate -> #NP error code (QEMU_QUIRKS: EXT not compared)"
%else
        CHECK32 [EXC_ERR], 6 * 8 + 2 + 1, "#UD with not-present gate -> #NP error code (IDT, EXT)"
%endif
        CHECK32 [EXC_EIP], .np6f, "#UD with not-present gate -> #NP eip"

        jmp finish32

%include "reset.inc"
