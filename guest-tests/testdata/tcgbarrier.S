# A multiboot kernel of seven instructions for TestQEMUOneCPUElidesGuestBarriers:
# the three barrier forms Linux's virtio ring relies on on x86 (mfence;
# "lock; addl $0,(%esp)", which is smp_mb; xchg, which is smp_store_mb),
# between plain stores and loads, then an exit through isa-debug-exit.
.section .multiboot
.align 4
.long 0x1BADB002
.long 0x00000000
.long -(0x1BADB002)
.section .text
.globl _start
_start:
  mov $stack_top, %esp
  movl $1, flag1
  mfence
  movl flag2, %eax
  lock addl $0, (%esp)
  xchgl %eax, flag1
  outb %al, $0xf4
1: hlt
  jmp 1b
.section .bss
.align 16
flag1: .long 0
flag2: .long 0
stack: .skip 4096
stack_top:
