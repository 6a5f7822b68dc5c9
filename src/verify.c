/* Not written yet. */
#include <config.h>
