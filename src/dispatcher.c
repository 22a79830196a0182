/* dispatcher.c - not written yet. */
#include "sluice.h"
