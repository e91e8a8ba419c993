// The processor's spin-wait hint, which Swift cannot emit: a thread polling a flag calls it in
// its loop, so that the loop does not flood the core (and a hyperthread sibling) with
// speculative loads, and leaves it promptly when the flag changes.
#ifndef PKM_SPIN_WAIT_H
#define PKM_SPIN_WAIT_H

/// `pause` on x86, `yield` on Arm, nothing elsewhere.
void pkm_spin_pause(void);

#endif
