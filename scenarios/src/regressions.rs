//! Failures the scenarios found, kept as fixed cases: each a seed, the
//! case's text (which keeps its meaning whatever the generators become)
//! and a one-line postmortem (what broke, what fixed it). Every one runs
//! in CI (`tests/regressions_sim.rs`) and must pass.

/// One kept failure.
pub struct Regression {
    pub name: &'static str,
    pub seed: u64,
    /// The case, as `Case`'s text form.
    pub case: &'static str,
    /// What broke, and what fixed it.
    pub postmortem: &'static str,
}

pub const DATA_LOST_UNDER_A_CLEARED_MARK: Regression = Regression {
    name: "data_lost_under_a_cleared_mark",
    seed: 7,
    case: "layout=replica3 clients=1 | plan: @1296+100 crash s1 | c1: r f0",
    postmortem: "a post-op's lowered dirty mark reached disk (committed by another file's fsync) \
                 before the write's data, so power loss on s1 left a clean empty copy beside two \
                 full ones; the brick now fdatasyncs a file before lowering its data dirty mark \
                 (node/src/brick/counters.rs syncs_data_first)",
};

pub const BRICK_GAVE_UP_ON_DNS_AT_START: Regression = Regression {
    name: "brick_gave_up_on_dns_at_start",
    seed: 25,
    case:
        "layout=replica3 clients=1 | plan: @1000+12266 dns s1 hang; @5000+6299 kill s1/0 | c1: r f3",
    postmortem:
        "a brick restarted while its host's name did not resolve failed to bind and exited, \
                 so s1 stayed down and heal never finished; the brick now retries resolving its \
                 listen address for up to 30 s (node/src/server.rs bind_listen)",
};

pub const UNLINK_LOST_IN_POWER_LOSS: Regression = Regression {
    name: "unlink_lost_in_power_loss",
    seed: 18,
    case: "layout=replica3 shd-threads=1 fsync-namespace=off clients=2 | plan: @1603+112 crash s1 \
           | c1: w f0 6548+1201#166 | c2: w f0 918+1341#165, rm f2",
    postmortem: "with fsync-namespace off, s1 lost an unlink in a power loss and kept its entry \
                 dirty mark; with no blame anywhere every copy counted as good and entry heal \
                 called the name a split-brain (under quorum); clean copies now heal dirty ones \
                 (heal/src/source.rs clean_sources)",
};

pub const HEAL_CUT_SHORT_LEFT_A_READABLE_SINK: Regression = Regression {
    name: "heal_cut_short_left_a_readable_sink",
    seed: 27,
    case: "layout=arbiter quorum=fixed:1 heal-timeout=5s shd-threads=4 clients=3 buggify=on \
           | plan: @8112+354 crash s1; @10716+16728 isolate s2; @13348+19433 dns s1 nxdomain \
           | c1: mv f0 f2, w f3 14993+537#125, w f5 377+361#240, r f1, c f0, c f5, mv f5 f2 \
           | c2: rm f4, c f4, c f1 \
           | c3: c f0, rm f5, t f1 12017, c f2, w f2 1498+1661#74, t f0 15834, rm f4, \
           w f3 12597+542#103, mv f2 f1, w f3 15522+410#239, c f1, w f2 15309+170#41, mv f1 f2, \
           mv f5 f0, w f2 9073+1030#156, mv f2 f5, r f5",
    postmortem: "s1 lost power after taking a write but before its post-op, so it was dirty and \
                 blamed by no one; heal chose s2 as the source, emptied s1 for a whole copy, then \
                 lost s2 to a partition, and s1 served a read of zeros; heal now has the sources \
                 durably blame the sinks before touching them, and reads prefer clean copies \
                 (heal/src/replicate.rs record_settlement, client/src/afr.rs clean_sources)",
};

pub const STALE_READ_FROM_A_MINORITY: Regression = Regression {
    name: "stale_read_from_a_minority",
    seed: 58,
    case: "layout=dist-replica2x3 ping-timeout=5s shd-threads=1 clients=2 buggify=on \
           | plan: @16691+15282 kill s2/0; @29196+9610 crash s1; @19231+11609 dns s2 nxdomain; \
           @18320+1757 kill s1/1; @28219+13823 cut s3; @3890+10560 kill-shd s2 \
           | c1: mv f2 f4, mv f0 f3, t f1 2918, w f5 7119+809#146, w f4 9115+126#146, \
           w f4 748+1950#56, w f5 13519+174#236, w f4 487+125#12, w f5 9043+1120#41, r f5, \
           w f5 13354+438#177, c f0, w f4 10901+275#80, w f4 14239+1401#255, w f4 14920+1047#232, \
           w f1 2620+260#148, c f0, w f5 11597+1016#110, w f0 15210+776#79, r f5 \
           | c2: w f1 9888+1322#199, w f2 10036+66#91, w f2 10402+534#212, w f2 1656+693#182, \
           r f5, rm f5",
    postmortem: "with s1 powered off and s3 cut off from the client, a read was served by s2 \
                 alone, which had missed an acknowledged write while its brick was down, and \
                 returned older bytes; reads now need the write quorum of counter answers \
                 (client/src/replicate/rules.rs read_quorum_met)",
};

pub const WRONG_BRICK_BEHIND_A_REUSED_PORT: Regression = Regression {
    name: "wrong_brick_behind_a_reused_port",
    seed: 100,
    case: "layout=dist-replica2x3 quorum=fixed:2 ping-timeout=2s fsync-namespace=off clients=1 \
           | plan: @3573+6231 kill s3/1; @8306+13423 kill s3/0; @5670+10574 loss 115/1000 \
           | c1: w f5 1065+1194#99, r f3, w f4 5937+1707#35, w f2 5142+1580#212, \
           w f5 8698+1386#118, r f2, w f2 13566+76#51, rm f3, w f3 9157+1943#118, rm f3, \
           mv f4 f2, c f1, c f0, w f0 507+1898#2, r f4, w f1 3824+12#147, w f4 11750+1563#238, \
           r f3, c f1, mv f2 f3, c f4, w f2 6101+689#129, r f1, r f0, c f0, w f5 6331+729#39, \
           c f4, w f4 5877+587#146, r f0, w f2 12709+2006#144, w f2 1403+1980#169, \
           w f2 12034+462#179, r f2, w f4 3660+947#239, w f4 3776+1394#124, c f0",
    postmortem: "s3's second brick restarted on the port its dead first brick had held, the port \
                 map still gave that port for the first, and a client's writes for one replica \
                 set went to the other set's brick (names missing on two copies, never healed); \
                 the brick now refuses a client that meant another brick and the port map \
                 forgets a port's former owner (node/src/service.rs meant_brick, \
                 mgmt/src/daemon/service.rs sign_in)",
};

pub const ARBITER_ONLY_FILE_NEVER_HEALED: Regression = Regression {
    name: "arbiter_only_file_never_healed",
    seed: 187,
    case: "layout=arbiter quorum=auto ping-timeout=10s heal-timeout=600s shd-threads=1 \
           fsync-namespace=on clients=2 buggify=on | plan: @59447+1608 full s1; @20782+19794 \
           latency 1908ms; @19410+13948 loss 164/1000; @17521+19757 full s2; @8103+18686 cut s1; \
           @40661+5127 kill s2/1 | c1: w f3 12688+375#234, w f3 1622+1948#219, w f5 2239+1960#252, \
           w f4 10924+161#249, w f4 6033+1800#118, c f5, w f5 8953+743#109, c f2, w f1 \
           10103+2038#96, t f1 556, w f3 2894+1162#88, w f1 5670+300#135, c f2 | c2: c f2, w f2 \
           3663+1086#243, c f4, w f3 4493+1995#159, mv f5 f1, r f5, r f4, rm f4, w f2 13148+1849#9, \
           c f1, w f1 1648+653#53, rm f0, c f2, w f3 4839+1320#67, rm f3, w f2 5675+330#52, w f2 \
           13689+1020#42, w f3 15282+586#253, w f0 9531+1218#252, c f4, c f4, c f2, w f1 \
           5753+1145#178, w f2 15154+189#20, t f1 9602, c f0, rm f2, c f3, w f1 9327+653#155, r f3, \
           mv f2 f1, rm f5, w f1 14567+256#43, r f2, w f0 3671+768#128, rm f4, mv f1 f2",
    postmortem: "a create under a cut and packet loss reached only the arbiter, which was left \
                 the only good copy of the directory; entry heal refused for ever to make the \
                 file on the data bricks (the arbiter is no data source) and heal never \
                 finished; a file no data brick holds was never acknowledged, so heal now takes \
                 it off the arbiter (heal/src/entry.rs dataless_on_arbiter)",
};

pub const LOST_GFID_NEVER_GIVEN_BACK: Regression = Regression {
    name: "lost_gfid_never_given_back",
    seed: 375,
    case: "layout=replica3 quorum=fixed:2 ping-timeout=42s heal-timeout=5s shd-threads=1 \
           fsync-namespace=on clients=3 buggify=off | plan: @52968+18291 cut s1; @11715+7612 \
           lose-xattrs s1 12 | c1: c f1, w f4 2208+324#189, w f5 8890+1255#13, w f5 14299+930#121, \
           c f2, w f1 15089+269#244, c f5, w f3 9292+1725#102, w f2 6112+1229#54, w f5 \
           12845+761#221, w f0 6224+1751#106, t f2 6656, c f4, mv f4 f1, c f4, w f1 7014+1987#186, \
           r f0, c f5, c f4, t f4 4886, r f3, c f1, w f5 14320+1342#166 | c2: c f0, r f4, w f4 \
           56+993#165, w f5 421+263#132, t f0 3044, rm f4, r f0, w f0 1012+935#60, w f4 \
           13670+422#98, w f0 6406+419#117, mv f3 f0, r f4, w f4 8442+1020#108 | c3: w f1 \
           8903+1865#64, w f3 12219+1837#60, w f5 4576+744#200, w f2 12518+228#62, c f3, w f2 \
           3324+1942#199, r f4, c f0, c f2, w f5 7771+1311#128, r f5, w f0 1785+1914#161, w f1 \
           14411+1040#133, w f1 13787+1112#85, c f4, r f2, c f5, r f0, w f0 6682+726#167, w f5 \
           15402+809#33, w f2 2143+1334#34, rm f3, c f3, r f2, t f2 9207, rm f5, t f0 7701, w f3 \
           13487+985#173, r f2, t f3 5334, mv f1 f4, w f0 13386+831#143, w f5 6001+34#121",
    postmortem: "a disk that dropped xattr updates lost a new file's gfid on s1; listings skipped \
                 the name and heal's link of the file's gfid there failed with EEXIST for ever; \
                 the brick now gives the gfid back when the name is the gfid's own file \
                 (node/src/brick/entry.rs restores_lost_gfid)",
};

pub const DISPERSE_VERSION_STEP_LOST_WITHOUT_A_MARK: Regression = Regression {
    name: "disperse_version_step_lost_without_a_mark",
    seed: 430,
    case: "layout=disperse2+1 quorum=auto ping-timeout=10s heal-timeout=60s shd-threads=16 \
           fsync-namespace=on clients=2 buggify=on | plan: @9935+9419 split s1,s2,c1,c2,c3; \
           @41414+13563 full s1; @58813+17141 kill s3/0; @47954+19306 dns s1 nxdomain; @42754+18715 \
           latency 283ms; @27904+2577 kill s2/1; @33036+14442 latent s2 c3/f5; @29624+17249 clock \
           s3 +3256s | c1: w f3 13903+1902#225, w f2 10786+644#150, c f0, w f4 4210+868#37, r f0, c \
           f4, c f1, c f4, c f1, r f3, r f0, r f0, w f0 12180+1661#11, t f4 14569, r f5, w f5 \
           11773+557#250, rm f4, c f2, w f3 506+1558#114, t f0 8130, mv f1 f2, r f5, r f2, c f3, w \
           f0 13190+313#97, w f0 10253+1453#20, w f2 12649+2006#46, w f3 1274+1385#171, w f1 \
           699+822#128, mv f4 f5, w f3 12848+1373#214, rm f2, w f1 14617+679#48, t f3 13774 | c2: w \
           f3 13876+100#25, mv f1 f3, rm f1, w f2 11680+169#113, w f2 7213+1205#19, c f3, c f2, mv \
           f1 f0, w f0 11595+1775#188, w f5 7158+940#56, c f2, t f2 16195, w f3 12076+1184#139, r \
           f1, r f1, mv f4 f5, w f2 3265+2016#71, w f1 4176+1830#30, r f3, w f2 4410+749#175, w f0 \
           7140+213#206, c f5, w f3 868+652#96, r f4, c f0, w f3 5141+13#44, t f0 2022, w f5 \
           1612+1551#73, c f3, rm f5, r f4, t f0 12013, rm f0, c f5, mv f0 f0, rm f4, c f2, rm f3, \
           w f5 2909+343#93, c f4, r f4, r f3, w f0 4786+537#197, t f4 7614, w f5 7359+714#130, w \
           f5 5942+1684#144, w f2 4447+1175#40, mv f0 f3, w f2 6387+235#2, r f0, w f3 \
           10333+1877#229, w f3 11441+1497#38, c f1",
    postmortem: "every brick of a disperse set took an entry operation but one missed the \
                 directory's version step, and with no pre-op nothing marked the directory: its \
                 copies stayed at two versions; entry operations now mark dirty before the change \
                 and clear only when every brick took it (client/src/disperse/entry.rs \
                 entry_post_op)",
};

pub const SPLIT_BRAIN_FROM_DISAGREEING_GOOD_COPIES: Regression = Regression {
    name: "split_brain_from_disagreeing_good_copies",
    seed: 649,
    case: "layout=arbiter quorum=auto ping-timeout=2s heal-timeout=10s shd-threads=4 \
           fsync-namespace=on clients=3 buggify=on | plan: @20127+18534 cut-oneway s3; @16366+6153 \
           crash s2; @19345+10819 crash s1 | c1: mv f5 f1, rm f4, r f3, rm f1, w f0 2351+754#185, w \
           f0 5121+37#87, t f1 14933, c f3, w f5 8404+635#199, c f0, w f2 650+1030#108, w f2 \
           15050+1056#111, rm f0, mv f3 f3, w f0 543+228#120, mv f2 f2, w f4 10089+578#244, c f0, w \
           f4 8741+68#71, r f2, w f4 9825+331#218, w f4 6626+1620#230, t f0 2530, w f3 8323+331#38, \
           mv f4 f3, w f3 8487+150#242, rm f5, w f5 13352+578#145, w f0 13932+1222#81 | c2: w f2 \
           10459+741#2 | c3: c f2, w f1 4791+1414#234, w f5 11922+1026#13, r f2, c f5, c f2, c f5, \
           c f3, rm f1, c f5, w f1 13124+443#21, mv f3 f1, r f4, r f5, c f1, r f0, r f0, w f1 \
           10977+330#192, c f2, w f1 1148+1839#19, c f0, c f3, c f0, r f4, r f2, t f1 13395, mv f0 \
           f5, w f2 7672+1461#184, rm f0, t f5 13036, r f3, w f3 6979+846#135, c f5, c f1, w f2 \
           7783+1282#34, rm f5, rm f4, t f5 5499, w f4 3538+1720#209, r f1, r f0, rm f5, w f4 \
           14384+1595#48, w f3 7173+1705#201, c f3, t f3 9875, w f3 2496+661#30, w f0 11869+723#21, \
           r f0, w f1 7523+1014#211, r f0, w f4 9621+318#129, w f5 13931+219#254",
    postmortem: "a rename took on s1 just before s1 lost power, not on s2; both were left dirty \
                 with no blame between them, and an unlink of the old name through s1 and s2 \
                 (the arbiter cut off) worked on s2 only, so s2 blamed s1 and the arbiter while \
                 the arbiter blamed s2: a split-brain under quorum; an entry operation the good \
                 copies answer differently now records no blame and fails, leaving heal to settle \
                 the name (client/src/replicate/rules.rs good_copies_disagree)",
};

pub const DISPERSE_NAME_WITHOUT_ITS_GFID: Regression = Regression {
    name: "disperse_name_without_its_gfid",
    seed: 320,
    case: "layout=disperse2+1 quorum=auto ping-timeout=5s heal-timeout=60s shd-threads=4 \
           fsync-namespace=on clients=1 buggify=off | plan: @12616+14740 lose-xattrs s3 6 | c1: r \
           f2, w f2 10632+1818#206, r f5, c f1, rm f4, w f2 14830+1450#93, w f2 14836+630#57, t f0 \
           2069, w f5 10622+1709#231, w f0 1562+1794#246, w f2 8519+1224#115, w f0 7740+1651#14, c \
           f3, w f5 3004+1030#179, mv f1 f0, w f2 4515+1805#92, c f5, t f3 8787, w f3 \
           11506+887#162, w f4 11030+1451#65, rm f5, w f5 7573+1032#32, c f0, c f5, w f0 \
           7630+28#37, mv f3 f2, t f5 5644, w f5 525+1067#188, mv f3 f4, w f0 11624+682#200, w f3 \
           4212+196#28, w f1 14590+309#201, w f2 12859+1739#78, mv f0 f2",
    postmortem: "a disk that dropped xattr updates lost a new file's gfid on one disperse brick \
                 while the directory's version there agreed; that brick's listings skipped the \
                 name, and the full sweep filled missing names on replicate sets only, so the \
                 brick never got the file back; the sweep now fills names at least k bricks list \
                 on disperse sets too (heal/src/full.rs fill_plan, heal/src/disperse_entry.rs \
                 fill_names)",
};

pub const HANDLE_LEFT_BY_A_TORN_UNLINK: Regression = Regression {
    name: "handle_left_by_a_torn_unlink",
    seed: 302,
    case: "layout=arbiter quorum=auto ping-timeout=5s heal-timeout=600s shd-threads=4 \
           fsync-namespace=off clients=4 buggify=on | plan: @31010+10670 outage c1 33ms; \
           @15961+15246 full s2; @24200+12478 latency 511ms; @34010+15337 crash s2 | c1: r f4, w f3 \
           1809+304#127, r f4, w f0 5929+963#68, r f4, w f1 14249+580#8, t f5 8569, rm f3, c f0, w \
           f2 5657+389#144, w f4 12396+1927#180, w f3 5072+1803#68, mv f0 f5, w f5 10539+1447#237, \
           r f2, w f3 6569+1835#228, mv f1 f0, t f3 3619, c f5, w f1 14435+187#112, c f4, r f3, w \
           f0 2865+303#226, w f3 11430+1390#179, w f5 1855+341#71 | c2: c f1, w f4 12861+1450#46, c \
           f4, c f4 | c3: c f0, t f3 10503, w f3 4783+764#199, w f4 4078+684#171, w f4 \
           2196+297#170, r f4, t f3 10200, t f3 5492, w f0 39+498#35, r f1, w f0 696+1844#151, r \
           f5, mv f4 f2, w f1 13723+2010#165, w f3 9335+1102#248, w f3 11551+437#192, t f3 5341, r \
           f5, c f4, c f3, w f2 4818+14#251, w f2 6996+808#49, w f1 5904+507#79, mv f3 f2, r f5, c \
           f1, c f0, mv f3 f1, w f5 2964+351#226, w f5 4056+281#121, c f0, r f1, mv f1 f5, w f3 \
           338+626#182, mv f3 f0, w f1 11069+1881#54, w f2 10648+1655#122, t f1 4452, w f4 \
           264+474#135, r f2, mv f1 f4 | c4: c f0, r f0, w f3 908+2047#178, w f3 1545+842#213, w f5 \
           8894+963#67, mv f0 f5, rm f0, w f0 12862+1460#180, c f2, mv f3 f4, rm f2, t f2 7336, c \
           f4, w f1 10264+1033#97, mv f0 f2, r f4, w f0 9041+411#209, c f1, w f4 12005+1379#94, w \
           f3 8568+875#142, w f5 7529+1181#24, mv f5 f2, w f4 3671+1471#166",
    postmortem: "with namespace fsync off, a rename over a marked file on s2 reached the disk \
                 and the replaced file's handle removal did not when s2 lost power; the handle \
                 kept its marks and index entry while no other brick held the gfid, and heal \
                 skipped it for ever as not made there yet; brick recovery now drops a file \
                 no name links with its index entry (node/src/brick/mod.rs orphaned)",
};

pub const ZERO_VERSION_BESIDE_NONE: Regression = Regression {
    name: "zero_version_beside_none",
    seed: 10,
    case: "layout=disperse2+1 quorum=auto ping-timeout=2s heal-timeout=600s shd-threads=4 \
           fsync-namespace=on clients=3 buggify=on | plan: @42355+17617 kill-shd s1; @47210+16939 \
           split s3,c1,c3; @59674+4820 dns s2 hang; @47622+1819 kill s3/0; @43341+19505 kill s2/1; \
           @44170+12162 dns s1 hang | c1: r f0, w f0 11973+11#79, w f3 5414+757#94, r sh1, w f3 \
           12047+1770#176, t f0 3487, c f3, w f5 13270+271#224, w f3 7585+1585#249, w sh1 \
           564+1473#70, w f5 12702+379#204, w f0 13991+62#243, c f1, w f5 6060+248#255, w f4 \
           8192+980#129, t f2 10044, w f4 11850+496#185, mv f1 f2, w f2 14240+1749#31, r sh0, w sh1 \
           834+1988#153, w sh1 1117+1842#29, w sh0 2298+1618#113, rm f5, w sh0 1143+405#154, w f5 \
           6663+505#3, w f4 4244+674#47, w sh1 2426+545#195, w f4 14006+1117#230, w sh0 \
           1356+1811#230, w f0 11328+575#243, r f5, rm f4, w f5 15177+1025#51, w f2 848+1528#9, c \
           f4, w f1 5873+761#244, w f1 3046+1155#210, c f1, w sh0 3325+645#249, c f5, r sh1, r f0, \
           r f0, w f4 13342+319#52, t f0 3478, r sh1, w f5 10118+196#23, w f3 10531+1862#76, w sh1 \
           1225+608#13 | c2: w f3 5294+1379#10, rm f5, w sh0 1248+96#84, w f1 7953+302#235, mv f3 \
           f3, w f0 14698+498#40, mv f4 f3, r f0, c f2, w f0 8525+446#230, mv f0 f1, w f0 \
           2625+246#203, w sh1 3386+581#157, r sh0, w f0 6992+639#120, c f3, w f0 9410+593#29, r \
           f3, w sh1 2650+1162#83, rm f5, r f4, c f0, c f2, w sh0 205+1295#183, rm f0, w f1 \
           13772+890#83, rm f4, w f5 13969+680#48, mv f3 f4, w f5 1551+1671#27, w sh1 534+1106#85 | \
           c3: w sh0 1979+1868#65, r f4, c f4, rm f0, w f3 2295+462#229, c f1, t f0 1963, w f5 \
           10488+619#181, w f5 2800+1294#118, t f5 8245, t f0 3114, mv f5 f3, c f4, r sh0, r sh0, c \
           f5, rm f2, mv f4 f4, r f5, w f1 673+216#198, w sh1 2170+1545#35, w f4 2962+2002#165, t \
           f0 2983, c f3, c f5, mv f5 f3, r f0, w sh0 2008+1323#23, r f1, w f1 4559+319#149, w sh1 \
           262+1289#136, w f4 11576+1246#15, w f2 14171+888#125, c f1, c f1, w f0 4461+935#160, r \
           f4, mv f4 f4, w f0 8467+1797#88",
    postmortem: "a disperse file's version xattr was all zeros on one brick and not set on \
                 another, which disperse reads as the same version 0; the brick comparator \
                 called the copies different for ever; it now compares versions as disperse \
                 reads them (heal/src/compare.rs ec_version)",
};

pub const DIRTY_EVERYWHERE_NAME_LOST_BY_A_CRASH: Regression = Regression {
    name: "dirty_everywhere_name_lost_by_a_crash",
    seed: 284,
    // Shrunk with ping-timeout=42s heal-timeout=60s shd-threads=4; kept at
    // the defaults, where it fails the same way without the fix.
    case: "layout=replica3 fsync-namespace=off clients=2 | plan: @3825+4567 crash s1 \
           | c1: c f4, t f2 14287, w sh0 669+238#162, r f4, w f3 6927+1374#117, \
           w sh1 893+2022#246, w f2 2127+1478#71, mv f0 f5, w f0 7398+589#122 \
           | c2: w f4 10764+1176#151",
    postmortem: "a create refused everywhere (EEXIST) left /c1 dirty on every copy; a new name \
                 made there next was lost from s1 by power loss (namespace fsync off) with its \
                 post-op, so every copy was dirty, none blamed, none clean, and entry heal read \
                 the missing name as good copies disagreeing: /c1 stayed pending for ever; entry \
                 heal now merges the names in that case (heal/src/source.rs merges_names, \
                 heal/src/replicate_entry.rs fill_listed)",
};

pub const TWO_BRICKS_ON_ONE_DIRECTORY: Regression = Regression {
    name: "two_bricks_on_one_directory",
    seed: 41,
    // Shrunk from cluster seed 41. heal-timeout=60s stays: at the default
    // the old self-heal daemon's crawl falls where it hides nothing, and
    // the case passed without the fix.
    case: "layout=replica3 heal-timeout=60s fsync-namespace=off clients=3 \
           | plan: @24520+2906 mgmtd-crash s1 104ms; @18136+17421 lose-xattrs s2 1; \
           @21159+1739 isolate s1 | c1: mv f5 f1 | c2: c f1 | c3: c f1",
    postmortem: "the simulator's launcher started a second brick (and self-heal daemon) on s1's \
                 directory when mgmtd restarted after a crash, where production adopts the one \
                 still running by its pidfile; once bricks kept clean index entries in memory, \
                 the new brick listed as pending an entry the old one had kept clean, and it \
                 waited for heal for ever; the launcher now adopts a process still running \
                 (scenarios/src/mgmt.rs left_running)",
};

/// Every kept failure.
pub const ALL: &[Regression] = &[
    TWO_BRICKS_ON_ONE_DIRECTORY,
    DIRTY_EVERYWHERE_NAME_LOST_BY_A_CRASH,
    ZERO_VERSION_BESIDE_NONE,
    HANDLE_LEFT_BY_A_TORN_UNLINK,
    DISPERSE_NAME_WITHOUT_ITS_GFID,
    SPLIT_BRAIN_FROM_DISAGREEING_GOOD_COPIES,
    LOST_GFID_NEVER_GIVEN_BACK,
    DISPERSE_VERSION_STEP_LOST_WITHOUT_A_MARK,
    ARBITER_ONLY_FILE_NEVER_HEALED,
    WRONG_BRICK_BEHIND_A_REUSED_PORT,
    STALE_READ_FROM_A_MINORITY,
    HEAL_CUT_SHORT_LEFT_A_READABLE_SINK,
    DATA_LOST_UNDER_A_CLEARED_MARK,
    BRICK_GAVE_UP_ON_DNS_AT_START,
    UNLINK_LOST_IN_POWER_LOSS,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Case;

    #[test]
    fn every_regression_parses_and_is_named_once() {
        let mut names = std::collections::BTreeSet::new();
        for r in ALL {
            assert!(names.insert(r.name), "{} is listed twice", r.name);
            let case: Case = r.case.parse().unwrap_or_else(|e| panic!("{}: {e}", r.name));
            assert_eq!(
                case.to_string().parse::<Case>().as_ref(),
                Ok(&case),
                "{}",
                r.name
            );
            assert!(!r.postmortem.is_empty());
        }
    }
}
