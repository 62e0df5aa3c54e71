"""The ``slatrack`` command line (``commands``) and every text table it prints (``render``)."""
