/* The interactive workbench: the UI thread (ncurses screen, readline REPL
 * line, keys) over an engine thread that steps the run and owns its Lua
 * state (DESIGN.md §3). */
#ifndef REED_WORKBENCH_H
#define REED_WORKBENCH_H

#include "reed.h"

/* Runs the workbench on an opened run until the user quits (after a
 * checkpoint). Takes over the terminal and restores it on every exit path.
 * Returns the process exit status. */
int workbench_main(reed_run *run);

#endif
