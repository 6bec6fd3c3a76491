"""``clframe run`` as a script file.

Lightning's DDP launcher starts the other ranks by running ``sys.argv`` again; the console
script ``clframe`` cannot be re-run that way with the ``run`` sub-command, so ``clframe run``
puts this file in ``sys.argv[0]``.
"""

import sys

if __name__ == "__main__":
    from clframe.cli import main

    main(["run", *sys.argv[1:]])
