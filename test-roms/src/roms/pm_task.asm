; pm_task: hardware task switching (32-bit TSS).
;
; Covers JMP to a TSS descriptor (old task's state saved in its TSS: EIP after the JMP, general
; registers, EFLAGS, segments; new state loaded; old busy bit cleared, new set; NT=0; no back link;
; CR0.TS set), JMP back, CALL to a TSS descriptor and through a GDT task gate (NT=1, back link = old TR,
; both busy), IRET with NT=1 returning to the caller (callee's busy bit cleared, NT clear in its saved
; EFLAGS), a task gate in the IDT for INT n and for #GP (the error code pushed on the new task's stack;
; the handler task fixes the faulting task's saved EIP and IRETs back), and the errors: JMP/CALL to a
; TSS with limit < 67H -> #TS(sel), JMP/CALL to a busy TSS -> #GP(sel), IRET with NT=1 whose back link
; is not busy -> #TS(back link), LTR of a busy TSS / non-TSS descriptor -> #GP(sel).
;
; Expectations from the Intel SDM Vol. 3A 7.2 (TSS, TSS descriptor, busy flag, task gate), 7.3 (task
; switching: steps, what is saved, CR0.TS), 7.4 (task linking: NT, previous task link, busy flag
; table 7-2), 6.11.1/6.12.2 (interrupt tasks, error code pushed on the new task's stack), 6.15
; "Interrupt 10—Invalid TSS Exception" (Table 6-6), Vol. 2 "JMP", "CALL", "IRET", "LTR".
%include "common.inc"
%include "sys.inc"

TSS1    equ 0x9000
TSS2    equ 0x9100
TSS3    equ 0x9300
TSSS    equ 0x9200
S_TSS1  equ 0x40
S_TSS2  equ 0x48
S_TSSS  equ 0x50        ; limit 0x50: too small
S_TSS3  equ 0x58
S_TGATE equ 0x60        ; task gate -> S_TSS2
REC     equ 0xA000      ; records (dwords)

T_LINK equ 0x00
T_EIP  equ 0x20
T_EFL  equ 0x24
T_EAX  equ 0x28
T_ECX  equ 0x2C
T_EDX  equ 0x30
T_EBX  equ 0x34
T_ESP  equ 0x38
T_EBP  equ 0x3C
T_ESI  equ 0x40
T_EDI  equ 0x44
T_ES   equ 0x48
T_CS   equ 0x4C
T_SS   equ 0x50
T_DS   equ 0x54

xgdt:
        DESC TSS1, 0x67, 0x89, 0x0     ; 0x40
        DESC TSS2, 0x67, 0x89, 0x0     ; 0x48
        DESC TSSS, 0x50, 0x89, 0x0     ; 0x50
        DESC TSS3, 0x67, 0x89, 0x0     ; 0x58
        GATE S_TSS2, 0, 0x85, 0        ; 0x60 task gate
xgdt_end:

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt_end, pm_main

        bits 32
; init_tss: EDI = TSS base, EAX = EIP, EDX = ESP. Flat ring-0 task, EFLAGS=2.
init_tss:
        push edi
        push ecx
        push eax
        mov ecx, 0x68 / 4
        xor eax, eax
        rep stosd
        pop eax
        pop ecx
        pop edi
        mov [edi + T_EIP], eax
        mov [edi + T_ESP], edx
        mov dword [edi + T_EFL], 2
        mov dword [edi + T_CS], SEL_CODE0
        mov dword [edi + T_SS], SEL_DATA0
        mov dword [edi + T_DS], SEL_DATA0
        mov dword [edi + T_ES], SEL_DATA0
        mov dword [edi + 0x58], SEL_DATA0
        mov dword [edi + 0x5C], SEL_DATA0
        mov word [edi + 0x66], 0x68
        ret

%macro DESCTYPE 2 ; selector, name: check the access byte of a TSS descriptor
        movzx eax, byte [GDT_ADDR + (%1) + 5]
        CHECK32 eax, 0x8B, %2
%endmacro

; task 1 (JMP target): records, jumps back to task 0
task1:
        str eax
        mov [REC + 0], eax
        mov [REC + 4], ebx                      ; EBX loaded from TSS1
        pushfd
        pop dword [REC + 8]
        movzx eax, byte [GDT_ADDR + S_TSS1 + 5]
        mov [REC + 12], eax
        movzx eax, byte [GDT_ADDR + SEL_TSS + 5]
        mov [REC + 16], eax
        mov eax, [TSS1 + T_LINK]
        mov [REC + 20], eax
        mov [REC + 24], esp
        mov eax, cr0
        mov [REC + 28], eax
        jmp SEL_TSS:0
task1_after:
        ud2                                     ; never resumed: would report an unexpected #UD

; task 2 (CALL target): records, IRET back to the caller; re-entrant loop
task2:
        str eax
        mov [REC + 0], eax
        pushfd
        pop dword [REC + 4]
        mov eax, [TSS2 + T_LINK]
        mov [REC + 8], eax
        movzx eax, byte [GDT_ADDR + SEL_TSS + 5]
        mov [REC + 12], eax
        movzx eax, byte [GDT_ADDR + S_TSS2 + 5]
        mov [REC + 16], eax
        inc dword [REC + 40]
        iretd
        jmp task2

; task 3 (#GP task gate): error code on the stack; fix the faulting task's EIP and IRET
task3:
        pop eax
        mov [REC + 0], eax                      ; error code
        mov [REC + 4], esp
        movzx eax, word [TSS3 + T_LINK]
        mov [REC + 8], eax
        mov eax, [TSS_ADDR + T_EIP]
        mov [REC + 12], eax                     ; saved EIP of the faulting task
        mov eax, [REC + 60]
        mov [TSS_ADDR + T_EIP], eax             ; resume address
        iretd
        jmp task3

%macro FAULT 4
        TRY %%r
%%f:    %1
%%r:    ENDTRY
        EXPECT_EXC %2, %3, %%f, %4
%endmacro

pm_main:
        mov edi, REC
        mov ecx, 64
        xor eax, eax
        rep stosd
        mov edi, TSS1
        mov eax, task1
        mov edx, 0x60000
        call init_tss
        mov dword [TSS1 + T_EBX], 0x11111111
        mov dword [TSS1 + T_LINK], 0x1234
        mov edi, TSS2
        mov eax, task2
        mov edx, 0x61000
        call init_tss

; ------------------------------------------------------------ JMP to a TSS and back
        mov eax, 0xA0A0A0A0
        mov ebx, 0xB0B0B0B0
        mov ecx, 0xC0C0C0C0
        mov edx, 0xD0D0D0D0
        mov esi, 0x50505050
        mov edi, 0x0D0D0D0D
        mov ebp, 0xEBEBEBEB
        mov [REC + 56], esp
        push dword FL_CF | FL_ZF | 2
        popfd
        jmp S_TSS1:0x12345678                   ; offset ignored
.j1back:
        pushfd
        CHECK32 eax, 0xA0A0A0A0, "jmp back: eax restored"
        CHECK32 ebx, 0xB0B0B0B0, "jmp back: ebx restored"
        CHECK32 ecx, 0xC0C0C0C0, "jmp back: ecx restored"
        CHECK32 edx, 0xD0D0D0D0, "jmp back: edx restored"
        CHECK32 esi, 0x50505050, "jmp back: esi restored"
        CHECK32 edi, 0x0D0D0D0D, "jmp back: edi restored"
        CHECK32 ebp, 0xEBEBEBEB, "jmp back: ebp restored"
        pop eax
        and eax, FL_CF | FL_ZF | FL_NT
        CHECK32 eax, FL_CF | FL_ZF, "jmp back: eflags restored"
        mov eax, esp
        CHECK32 eax, [REC + 56], "jmp back: esp restored"
        CHECK32 [REC + 0], S_TSS1, "jmp: tr = new tss"
        CHECK32 [REC + 4], 0x11111111, "jmp: ebx loaded from new tss"
        mov eax, [REC + 8]
        and eax, FL_NT
        CHECK32 eax, 0, "jmp: NT=0 in new task"
        CHECK32 [REC + 12], 0x8B, "jmp: new tss busy"
        CHECK32 [REC + 16], 0x89, "jmp: old tss not busy"
        CHECK32 [REC + 20], 0x1234, "jmp: back link not written"
        CHECK32 [REC + 24], 0x60000, "jmp: esp from new tss"
        mov eax, [REC + 28]
        and eax, 8
        CHECK32 eax, 8, "task switch sets CR0.TS"
        clts
        CHECK32 [TSS_ADDR + T_EIP], .j1back, "old tss: saved eip after jmp"
        CHECK32 [TSS_ADDR + T_EAX], 0xA0A0A0A0, "old tss: saved eax"
        CHECK32 [TSS_ADDR + T_ESI], 0x50505050, "old tss: saved esi"
        CHECK32 [TSS_ADDR + T_ESP], [REC + 56], "old tss: saved esp"
        mov eax, [TSS_ADDR + T_EFL]
        and eax, FL_CF | FL_ZF
        CHECK32 eax, FL_CF | FL_ZF, "old tss: saved eflags"
        CHECK32 [TSS_ADDR + T_CS], SEL_CODE0, "old tss: saved cs"
        CHECK32 [TSS_ADDR + T_DS], SEL_DATA0, "old tss: saved ds"
        CHECK32 [TSS1 + T_EIP], task1_after, "task1 tss: saved eip after its jmp"
        movzx eax, byte [GDT_ADDR + S_TSS1 + 5]
        CHECK32 eax, 0x89, "task1 tss not busy after jmp away"
        DESCTYPE SEL_TSS, "task0 tss busy again"
        str eax
        CHECK32 eax, SEL_TSS, "tr back to task 0"

; ------------------------------------------------------------ CALL to a TSS, IRET back
        call S_TSS2:0
        pushfd
        pop eax
        and eax, FL_NT
        CHECK32 eax, 0, "after iret: NT=0 in caller"
        CHECK32 [REC + 0], S_TSS2, "call: tr = new tss"
        mov eax, [REC + 4]
        and eax, FL_NT
        CHECK32 eax, FL_NT, "call: NT=1 in called task"
        CHECK32 [REC + 8], SEL_TSS, "call: back link = caller tr"
        CHECK32 [REC + 12], 0x8B, "call: caller tss stays busy"
        CHECK32 [REC + 16], 0x8B, "call: called tss busy"
        movzx eax, byte [GDT_ADDR + S_TSS2 + 5]
        CHECK32 eax, 0x89, "iret: called tss no longer busy"
        mov eax, [TSS2 + T_EFL]
        and eax, FL_NT
        CHECK32 eax, 0, "iret: NT cleared in the returning task's saved eflags"
        DESCTYPE SEL_TSS, "iret: caller tss busy"
        mov dword [REC + 0], 0
        call S_TGATE:0                          ; GDT task gate -> TSS2 (resumes after its iretd)
        CHECK32 [REC + 0], S_TSS2, "call through gdt task gate"
        CHECK32 [REC + 40], 2, "task2 ran twice"
        clts

; ------------------------------------------------------------ task gate in the IDT
        mov dword [IDT_ADDR + 0x50 * 8], S_TSS2 << 16
        mov dword [IDT_ADDR + 0x50 * 8 + 4], 0x8500
        mov dword [REC + 0], 0
        int 0x50
        CHECK32 [REC + 0], S_TSS2, "int n through idt task gate"
        mov eax, [REC + 4]
        and eax, FL_NT
        CHECK32 eax, FL_NT, "idt task gate: nested (NT=1)"
        CHECK32 [REC + 8], SEL_TSS, "idt task gate: back link"
        CHECK32 [REC + 40], 3, "task2 ran three times"
        mov edi, TSS3
        mov eax, task3
        mov edx, 0x62000
        call init_tss
        mov dword [IDT_ADDR + 13 * 8], S_TSS3 << 16
        mov dword [IDT_ADDR + 13 * 8 + 4], 0x8500
        mov dword [REC + 60], .gp_resume
        mov ax, 0xFFF8
.gp_f:  mov ds, ax                              ; #GP(0xFFF8) -> task 3
.gp_resume:
        RESTORE_GATE 13
        CHECK32 [REC + 0], 0xFFF8, "#GP via task gate: error code on new task's stack"
        CHECK32 [REC + 4], 0x62000, "#GP via task gate: error code was the only push"
        CHECK32 [REC + 8], SEL_TSS, "#GP via task gate: back link"
        CHECK32 [REC + 12], .gp_f, "#GP via task gate: saved eip = faulting instruction"
        clts

; ------------------------------------------------------------ errors
        FAULT {jmp S_TSSS:0}, 10, S_TSSS, "jmp to tss with limit < 67h -> #TS"
        FAULT {call S_TSSS:0}, 10, S_TSSS, "call to tss with limit < 67h -> #TS"
        FAULT {jmp SEL_TSS:0}, 13, SEL_TSS, "jmp to busy tss"
        FAULT {call SEL_TSS:0}, 13, SEL_TSS, "call to busy tss"
        mov ax, SEL_TSS
        FAULT {ltr ax}, 13, SEL_TSS, "ltr busy tss"
        mov ax, SEL_DATA0
        FAULT {ltr ax}, 13, SEL_DATA0, "ltr data descriptor"
        mov dword [TSS_ADDR + T_LINK], S_TSS1   ; available (not busy) TSS
        pushfd
        or dword [esp], FL_NT
        popfd
        TRY .iret_r
        push dword 2
        push dword SEL_CODE0
        push dword .iret_r
.iret_f: iretd
.iret_r: ENDTRY
        mov dword [TSS_ADDR + T_LINK], 0
        EXPECT_EXC 10, S_TSS1, .iret_f, "iret NT=1 to non-busy back link -> #TS"
        pushfd
        pop eax
        and eax, FL_NT
        CHECK32 eax, 0, "NT cleared by the interrupt gate"
        str eax
        CHECK32 eax, SEL_TSS, "still task 0"

        jmp finish32

%include "reset.inc"
