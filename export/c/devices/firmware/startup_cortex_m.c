/* Start-up code and vector table for a Cortex-M bare-metal program under qemu-system-arm (every
 * Cortex-M profile: ARMv6-M, ARMv7-M, ARMv7E-M, ARMv8-M Mainline, ARMv8.1-M), with the console and
 * exit through semihosting and no C library (firmware/libc.c).
 *
 * Reset: enable the FPU (and MVE) when the build uses one, copy .data from flash, zero .bss, exit(main()).
 * A fault prints one line and stops the emulator, so a broken build fails fast instead of hanging. The
 * exit status is not carried by 32-bit semihosting: the program's last line (PASS or FAIL) decides. */
#include <stddef.h>
#include <stdint.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;

extern int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void edgernn_console_write(const char *text, size_t length);
void edgernn_exit(int status) __attribute__((noreturn));

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SEMIHOSTING_SYS_OPEN 0x01u
#define SEMIHOSTING_SYS_WRITE 0x05u
#define SEMIHOSTING_SYS_EXIT 0x18u
#define SEMIHOSTING_OPEN_WRITE 4u /* fopen mode "w": ":tt" opened so is the host's stdout */
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUN_TIME_ERROR 0x20023u

static uint32_t semihost(uint32_t operation, const void *argument)
{
	register uint32_t r0 __asm__("r0") = operation;
	register const void *r1 __asm__("r1") = argument;
	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
	return r0;
}

static uint32_t console = 0xFFFFFFFFu;

void edgernn_console_write(const char *text, size_t length)
{
	static const char name[] = ":tt";
	uint32_t write[3];
	if (console == 0xFFFFFFFFu) {
		uint32_t open[3] = {(uint32_t)name, SEMIHOSTING_OPEN_WRITE, sizeof name - 1};
		console = semihost(SEMIHOSTING_SYS_OPEN, open);
	}
	write[0] = console;
	write[1] = (uint32_t)text;
	write[2] = (uint32_t)length;
	semihost(SEMIHOSTING_SYS_WRITE, write);
}

void edgernn_exit(int status)
{
	semihost(SEMIHOSTING_SYS_EXIT,
	         (const void *)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUN_TIME_ERROR));
	for (;;) {
	}
}

void Fault_Handler(void)
{
	static const char message[] = "FAULT: the processor took an exception\nFAIL\n";
	edgernn_console_write(message, sizeof message - 1);
	edgernn_exit(1);
}

void Reset_Handler(void)
{
	const uint32_t *from = &__data_load__;
	uint32_t *to;

#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
	SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 (the FPU, and MVE on ARMv8.1-M): full access */
	__asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
	for (to = &__data_start__; to < &__data_end__;)
		*to++ = *from++;
	for (to = &__bss_start__; to < &__bss_end__;)
		*to++ = 0;
	edgernn_exit(main());
}

/* The vector table: the initial stack pointer, then reset, NMI, HardFault, MemManage, BusFault,
 * UsageFault, SecureFault (ARMv8-M). */
typedef void (*handler)(void);
struct vector_table {
	const uint32_t *stack_top;
	handler handlers[7];
};
__attribute__((section(".vectors"), used)) static const struct vector_table vectors = {
	&__stack_top__,
	{Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler},
};
