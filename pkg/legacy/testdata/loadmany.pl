#!/usr/bin/perl
# load.pl for many datagrams: one hex-encoded datagram per input line, one
# output line each: the list YAML::XS::Load reads, as JSON, or "ERROR".
use strict;
use warnings;
use JSON::PP;
use YAML::XS;
binmode STDIN;
binmode STDOUT;
my $json = JSON::PP->new->utf8->canonical->allow_nonref;
while (my $line = <STDIN>) {
    chomp $line;
    my $m = pack("H*", $line);
    unless ($m =~ s/^diskd://) { print "ERROR\n"; next }
    my $o = eval { Load($m) };
    if ($@) { print "ERROR\n"; next }
    print $json->encode($o), "\n";
}
