#!/usr/bin/perl
# Reads one datagram on stdin the way the original App::Diskd 0.01 does
# (strip "diskd:", YAML::XS::Load) and prints the list as JSON, or
# "ERROR: ..." when Load dies (the original dies with it).
use strict;
use warnings;
use JSON::PP;
use YAML::XS;
binmode STDIN;
binmode STDOUT;
local $/;
my $m = <STDIN>;
$m =~ s/^diskd:// or do { print "ERROR: no prefix\n"; exit 0 };
my $o = eval { Load($m) };
if ($@) { print "ERROR: $@"; exit 0 }
print JSON::PP->new->utf8->canonical->allow_nonref->encode($o), "\n";
